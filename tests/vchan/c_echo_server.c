/* A plain C program written only against libvchan.h (Qubes' API): a vchan server that
 * echoes everything back until its client closes. Uses select() on
 * libvchan_fd_for_select, libvchan_wait, data_ready and buffer_space like Qubes' tools.
 * Usage: c_echo_server DOMAIN PORT. Exit 0 after a clean echo session. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>

#include "libvchan.h"

/* Error exit that still closes the channel (no leak reports under LSan). */
#define FAIL(code)            \
  do {                        \
    libvchan_close(ctrl);     \
    return (code);            \
  } while (0)

static int wait_event(libvchan_t *ctrl) {
  int fd = libvchan_fd_for_select(ctrl);
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(fd, &rd);
  if (select(fd + 1, &rd, NULL, NULL, NULL) < 0 && errno != EINTR) return -1;
  return libvchan_wait(ctrl);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s DOMAIN PORT\n", argv[0]);
    return 2;
  }
  libvchan_t *ctrl = libvchan_server_init(atoi(argv[1]), atoi(argv[2]), 65536, 65536);
  if (!ctrl) return 3;
  /* WAITING, or CONNECTED already if a client was queued before we looked. */
  int state = libvchan_is_open(ctrl);
  if (state != VCHAN_WAITING && state != VCHAN_CONNECTED) FAIL(4);
  printf("listening\n");
  fflush(stdout);
  while (libvchan_is_open(ctrl) == VCHAN_WAITING) {
    if (wait_event(ctrl) < 0) FAIL(5);
  }
  long total = 0;
  char buf[8192];
  for (;;) {
    int ready = libvchan_data_ready(ctrl);
    if (ready == 0) {
      if (libvchan_is_open(ctrl) != VCHAN_CONNECTED) break;
      if (wait_event(ctrl) < 0) FAIL(6);
      continue;
    }
    int want = ready < (int)sizeof buf ? ready : (int)sizeof buf;
    int n = libvchan_read(ctrl, buf, (size_t)want);
    if (n <= 0) FAIL(7);
    while (libvchan_buffer_space(ctrl) < n) {
      if (libvchan_is_open(ctrl) != VCHAN_CONNECTED) FAIL(8);
      if (wait_event(ctrl) < 0) FAIL(9);
    }
    if (libvchan_send(ctrl, buf, (size_t)n) != n) FAIL(10);
    total += n;
  }
  /* Client gone: reads now fail instead of blocking. */
  if (libvchan_read(ctrl, buf, 1) != -1) FAIL(11);
  libvchan_close(ctrl);
  printf("echoed %ld\n", total);
  return 0;
}
