/* The request side of tvmq's device transport, shared by the bare-metal / host driver
 * (driver.c) and the Zephyr application (zephyr/main.c).
 *
 * Host -> device:  "RUN <hex bytes of one input tensor>\n\n"  or  "QUIT\n"
 * Anything before "RUN " / "QUIT" is ignored, so stray bytes cannot desynchronize the
 * stream. The includer defines TVMQ_GETCHAR() (returning a byte, or a negative value at
 * end of input) before including this header.
 */
#ifndef TVMQ_PROTOCOL_H
#define TVMQ_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

static int tvmq_hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static int tvmq_is_eol(int c) { return c == '\n' || c == '\r' || c < 0; }

/* Reads a command word; returns 'R' (RUN), 'Q' (QUIT) or 0 at end of input. */
static int tvmq_read_command(void) {
  const char* words[2] = {"RUN ", "QUIT"};
  int pos[2] = {0, 0};
  for (;;) {
    int c = TVMQ_GETCHAR();
    if (c < 0) return 0;
    for (int w = 0; w < 2; ++w) {
      pos[w] = (c == words[w][pos[w]]) ? pos[w] + 1 : (c == words[w][0]);
      if (pos[w] == 4) return w == 0 ? 'R' : 'Q';
    }
  }
}

/* Reads the hex payload of a RUN line into buf; returns 0 when exactly cap bytes came,
 * -1 otherwise (the rest of the line is consumed either way). */
static int tvmq_read_payload(uint8_t* buf, size_t cap) {
  size_t n = 0;
  for (;;) {
    int hi = TVMQ_GETCHAR();
    if (tvmq_is_eol(hi)) return n == cap ? 0 : -1;
    int lo = TVMQ_GETCHAR();
    if (tvmq_hexval(hi) < 0 || tvmq_hexval(lo) < 0 || n >= cap) {
      while (!tvmq_is_eol(lo)) lo = TVMQ_GETCHAR();
      return -1;
    }
    buf[n++] = (uint8_t)(tvmq_hexval(hi) << 4 | tvmq_hexval(lo));
  }
}

#endif
