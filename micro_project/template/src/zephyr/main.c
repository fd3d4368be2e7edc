/* tvmq on Zephyr: the same line protocol as src/driver.c over the Zephyr console.
 *
 * Host -> device:  "RUN <hex bytes of one input tensor>\n"  or  "QUIT\n"
 * Device -> host:  "OK <cycles> <hex bytes of the output tensor>\n" / "ERR <message>\n"
 * Cycles come from k_cycle_get_32() (the core clock on Cortex-M boards).
 */
#include <stdint.h>
#include <string.h>
#include <zephyr/console/console.h>
#include <zephyr/kernel.h>
#include <zephyr/sys/printk.h>

#include "tvmq_model.h"

static tvmq_input_t input[TVMQ_INPUT_SIZE];
static tvmq_output_t output[TVMQ_OUTPUT_SIZE];

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static int read_command(void) {
  const char* words[2] = {"RUN ", "QUIT"};
  int pos[2] = {0, 0};
  for (;;) {
    int c = console_getchar();
    for (int w = 0; w < 2; ++w) {
      pos[w] = (c == words[w][pos[w]]) ? pos[w] + 1 : (c == words[w][0]);
      if (pos[w] == 4) return w == 0 ? 'R' : 'Q';
    }
  }
}

int main(void) {
  console_init();
  printk("tvmq ready\n");
  uint8_t* in = (uint8_t*)input;
  while (read_command() == 'R') {
    size_t n = 0;
    int bad = 0;
    for (;;) {
      int hi = console_getchar();
      if (hi == '\n' || hi == '\r') break;
      int lo = console_getchar();
      if (hexval(hi) < 0 || hexval(lo) < 0 || n >= sizeof(input)) {
        bad = 1;
        while (lo != '\n' && lo != '\r') lo = console_getchar();
        break;
      }
      in[n++] = (uint8_t)(hexval(hi) << 4 | hexval(lo));
    }
    if (bad || n != sizeof(input)) {
      printk("ERR input must be %u bytes of hex\n", (unsigned)sizeof(input));
      continue;
    }
    uint32_t t0 = k_cycle_get_32();
    int rc = tvmq_model_run(input, output);
    uint32_t t1 = k_cycle_get_32();
    if (rc != 0) {
      printk("ERR tvmq_model_run returned %d\n", rc);
      continue;
    }
    printk("OK %u ", (unsigned)(t1 - t0));
    const uint8_t* out = (const uint8_t*)output;
    for (size_t i = 0; i < sizeof(output); ++i) printk("%02x", out[i]);
    printk("\n");
  }
  return 0;
}
