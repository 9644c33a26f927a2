/* A plain C program written only against libvchan.h (Qubes' API): a vchan client that
 * sends a pattern, expects it echoed back, and closes.
 * Usage: c_echo_client DOMAIN PORT BYTES [async]. Exit 0 when the echo matched. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include "libvchan.h"

/* Error exit that still closes the channel (no leak reports under LSan). */
#define FAIL(code)            \
  do {                        \
    libvchan_close(ctrl);     \
    return (code);            \
  } while (0)

static unsigned char pattern(long i) { return (unsigned char)((i * 7 + i / 251) & 0xff); }

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s DOMAIN PORT BYTES [async]\n", argv[0]);
    return 2;
  }
  int domain = atoi(argv[1]), port = atoi(argv[2]);
  long bytes = atol(argv[3]);
  libvchan_t *ctrl;
  if (argc > 4 && strcmp(argv[4], "async") == 0) {
    int watch_fd = -1;
    ctrl = libvchan_client_init_async(domain, port, &watch_fd);
    if (!ctrl || watch_fd < 0) return 3;
    for (;;) {
      int r = libvchan_client_init_async_finish(ctrl, false);
      if (r == 0) break;
      if (r < 0) FAIL(4);
      fd_set rd;
      FD_ZERO(&rd);
      FD_SET(watch_fd, &rd);
      if (select(watch_fd + 1, &rd, NULL, NULL, NULL) < 0 && errno != EINTR) FAIL(5);
    }
  } else {
    ctrl = libvchan_client_init(domain, port);
    if (!ctrl) return 3;
  }
  if (libvchan_is_open(ctrl) != VCHAN_CONNECTED) FAIL(6);
  unsigned char out[4096], in[4096];
  long sent = 0, got = 0;
  while (got < bytes) {
    /* Keep at most a few KiB in flight so that the echo never fills both directions. */
    if (sent < bytes && sent - got < 8192) {
      int len = (int)(bytes - sent < (long)sizeof out ? bytes - sent : (long)sizeof out);
      for (int i = 0; i < len; i++) out[i] = pattern(sent + i);
      int n = libvchan_write(ctrl, out, (size_t)len);
      if (n <= 0) FAIL(7);
      sent += n;
      continue;
    }
    int n = libvchan_read(ctrl, in, sizeof in);
    if (n <= 0) FAIL(8);
    for (int i = 0; i < n; i++) {
      if (in[i] != pattern(got + i)) {
        fprintf(stderr, "mismatch at %ld\n", got + i);
        FAIL(9);
      }
    }
    got += n;
  }
  if (libvchan_data_ready(ctrl) != 0) FAIL(10);
  libvchan_close(ctrl);
  printf("ok %ld\n", got);
  return 0;
}
