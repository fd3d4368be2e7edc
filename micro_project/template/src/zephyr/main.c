/* tvmq on Zephyr: the same line protocol as src/driver.c over the Zephyr console.
 *
 * Host -> device: see tvmq_protocol.h (shared with the bare-metal driver).
 * Device -> host:  "OK <cycles> <hex bytes of the output tensor>\n" / "ERR <message>\n"
 * Cycles come from k_cycle_get_32() (the core clock on Cortex-M boards).
 */
#include <stdint.h>
#include <string.h>
#include <zephyr/console/console.h>
#include <zephyr/kernel.h>
#include <zephyr/sys/printk.h>

#include "tvmq_model.h"

#define TVMQ_GETCHAR() console_getchar()
#include "tvmq_protocol.h"

static tvmq_input_t input[TVMQ_INPUT_SIZE];
static tvmq_output_t output[TVMQ_OUTPUT_SIZE];

int main(void) {
  console_init();
  printk("tvmq ready\n");
  while (tvmq_read_command() == 'R') {
    if (tvmq_read_payload((uint8_t*)input, sizeof(input)) != 0) {
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
