"""tvmq's graph passes. Despite the folder name these are Relax passes (TVM 0.27 replaced
Relay with Relax); see README.md in this folder for the planned passes."""

__all__: list[str] = []
