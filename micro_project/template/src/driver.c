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

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Reads a command word; returns 'R' (RUN), 'Q' (QUIT) or 0 at end of input. */
static int read_command(void) {
  const char* words[2] = {"RUN ", "QUIT"};
  int pos[2] = {0, 0};
  for (;;) {
    int c = getchar();
    if (c == EOF) return 0;
    for (int w = 0; w < 2; ++w) {
      pos[w] = (c == words[w][pos[w]]) ? pos[w] + 1 : (c == words[w][0]);
      if (pos[w] == 4) return w == 0 ? 'R' : 'Q';
    }
  }
}

int main(void) {
#ifdef TVMQ_SYSTICK
  /* picolibc's buffered stdin asks semihosting for a whole buffer and blocks until it is
   * full while the host keeps the pipe open: read byte by byte instead. */
  setvbuf(stdin, NULL, _IONBF, 0);
  SYST_RVR = 0xFFFFFF;
  SYST_CVR = 0;
  SYST_CSR = 5;
#endif
  uint8_t* in = (uint8_t*)input;
  for (;;) {
    int cmd = read_command();
    if (cmd != 'R') break;
    size_t n = 0;
    int bad = 0;
    for (;;) {
      int hi = getchar();
      if (hi == '\n' || hi == EOF) break;
      int lo = getchar();
      if (hexval(hi) < 0 || hexval(lo) < 0 || n >= sizeof(input)) {
        bad = 1;
        while (lo != '\n' && lo != EOF) lo = getchar();
        break;
      }
      in[n++] = (uint8_t)(hexval(hi) << 4 | hexval(lo));
    }
    if (bad || n != sizeof(input)) {
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
