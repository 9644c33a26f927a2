/*
 * libvchan.h: Odyssey's C ABI for vchan, with the same names, types and semantics as
 * Qubes' libvchan.h, so that a C program written against Qubes' libvchan (socket or
 * xen) builds and links against libvchan-socket.so unchanged. The backend comes from
 * $VCHAN_BACKEND (socket by default; $VCHAN_SOCKET_DIR, $VCHAN_DOMAIN apply).
 * Every byte read comes from another domain: the caller must validate it.
 */
#ifndef _LIBVCHAN_H
#define _LIBVCHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int EVTCHN;

/* return values from libvchan_is_open */
/* remote disconnected or remote domain dead */
#define VCHAN_DISCONNECTED 0
/* connected */
#define VCHAN_CONNECTED 1
/* vchan server initialized, waiting for client to connect */
#define VCHAN_WAITING 2

struct libvchan;
typedef struct libvchan libvchan_t;

/* Listens for a client from `domain` on `port`; returns at once (state VCHAN_WAITING). */
libvchan_t *libvchan_server_init(int domain, int port, size_t read_min, size_t write_min);

/* Connects to the server in `domain` on `port`, waiting for it to appear. */
libvchan_t *libvchan_client_init(int domain, int port);
/* An alternative path for client connection:
 * 1. Call libvchan_client_init_async().
 * 2. Wait for watch_fd to become readable.
 * 3. When readable, call libvchan_client_init_async_finish().
 *
 * Repeat steps 2-3 until libvchan_client_init_async_finish returns 0. Abort on
 * negative values (error).
 * If connection attempt failed or should be aborted, call libvchan_close() to
 * clean up.
 */
libvchan_t *libvchan_client_init_async(int domain, int port, EVTCHN *watch_fd);
int libvchan_client_init_async_finish(libvchan_t *ctrl, bool blocking);

/* Partial I/O: blocks until at least one byte can move, moves what it can; -1 on error
 * or disconnect. */
int libvchan_write(libvchan_t *ctrl, const void *data, size_t size);
int libvchan_read(libvchan_t *ctrl, void *data, size_t size);
/* All-or-nothing I/O: returns size, or -1 on error or disconnect. */
int libvchan_send(libvchan_t *ctrl, const void *data, size_t size);
int libvchan_recv(libvchan_t *ctrl, void *data, size_t size);
/* Blocks until an event (data, space, connect, close); 0, or -1 on error. */
int libvchan_wait(libvchan_t *ctrl);
/* Closes the channel (the peer sees EOF) and frees ctrl. NULL is allowed. */
void libvchan_close(libvchan_t *ctrl);
/* An fd that turns readable when libvchan_wait() would not block. */
EVTCHN libvchan_fd_for_select(libvchan_t *ctrl);
/* VCHAN_DISCONNECTED, VCHAN_CONNECTED or VCHAN_WAITING. */
int libvchan_is_open(libvchan_t *ctrl);

/* Bytes readable / writable now without blocking. */
int libvchan_data_ready(libvchan_t *ctrl);
int libvchan_buffer_space(libvchan_t *ctrl);

#ifdef __cplusplus
}
#endif

#endif /* _LIBVCHAN_H */
