/* tvmq device driver: runs the generated model on request over a line-based transport.
 *
 * Host -> device:  "RUN <hex bytes of one input tensor>\n\n"  or  "QUIT\n"
 *                  (the spare newline releases the reply on QEMU, whose semihosting
 *                  console output waits for the next console read to return)
 * Device -> host:  "OK <instructions> <hex bytes of the output tensor>\n"
 *                  "ERR <message>\n"
 * Anything before "RUN"/"QUIT" on a line is ignored, so stray bytes on the wire cannot
 * desynchronize the stream. On QEMU (TVMQ_SYSTICK) instructions are SysTick ticks times
 * TVMQ_INSTR_NUM / TVMQ_INSTR_DEN under -icount shift=0 (40/1 on MPS2, 125/4 on MPS3
 * AN547); on the host the count is 0.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tvmq_model.h"

#define TVMQ_GETCHAR() getchar() /* EOF is negative */
#include "tvmq_protocol.h"

#ifdef TVMQ_SYSTICK
#define SYST_CSR (*(volatile uint32_t*)0xE000E010)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018)
#endif
#ifndef TVMQ_INSTR_NUM
#define TVMQ_INSTR_NUM 40
#define TVMQ_INSTR_DEN 1
#endif

static tvmq_input_t input[TVMQ_INPUT_SIZE];
static tvmq_output_t output[TVMQ_OUTPUT_SIZE];

int main(void) {
#ifdef TVMQ_SYSTICK
  /* picolibc's buffered stdin asks semihosting for a whole buffer and blocks until it is
   * full while the host keeps the pipe open: read byte by byte instead. */
  setvbuf(stdin, NULL, _IONBF, 0);
  SYST_RVR = 0xFFFFFF;
  SYST_CVR = 0;
  SYST_CSR = 5;
#endif
  while (tvmq_read_command() == 'R') {
    if (tvmq_read_payload((uint8_t*)input, sizeof(input)) != 0) {
      printf("ERR input must be %u bytes of hex\n", (unsigned)sizeof(input));
      fflush(stdout);
      continue;
    }
    unsigned long instructions = 0;
#ifdef TVMQ_SYSTICK
    uint32_t t0 = SYST_CVR;
#endif
    int rc = tvmq_model_run(input, output);
#ifdef TVMQ_SYSTICK
    uint32_t t1 = SYST_CVR;
    instructions =
        (unsigned long)(((uint64_t)((t0 - t1) & 0xFFFFFF) * TVMQ_INSTR_NUM) / TVMQ_INSTR_DEN);
#endif
    if (rc != 0) {
      printf("ERR tvmq_model_run returned %d\n", rc);
      fflush(stdout);
      continue;
    }
    printf("OK %lu ", instructions);
    const uint8_t* out = (const uint8_t*)output;
    for (size_t i = 0; i < sizeof(output); ++i) printf("%02x", out[i]);
    printf("\n");
    fflush(stdout);
  }
  exit(0);
}
