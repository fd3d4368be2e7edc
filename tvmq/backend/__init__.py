"""Backends: code generation for deployment (plain C today; the AOT executor and the
Project API platforms build on it)."""

from .c_codegen import C_PRELUDE, CFunction, CodegenError, generate_c, lower_for_c, print_function

__all__ = ["C_PRELUDE", "CFunction", "CodegenError", "generate_c", "lower_for_c", "print_function"]
