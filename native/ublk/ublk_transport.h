/*
 * The ublk transport, also parsed by cffi: the control ring on
 * /dev/ublk-control and each queue's command ring on /dev/ublkcN (io_uring
 * passthrough commands through liburing), which Python cannot drive itself.
 * Which commands to send stays in Python; the queue's requests are served
 * in C (queue_server.h), so that no Python runs per request.
 */
#ifndef TRUENO_UBLK_TRANSPORT_H
#define TRUENO_UBLK_TRANSPORT_H

#include <stdint.h>

/* The control ring on /dev/ublk-control (SQE128, one command at a time). */
struct ctrl_ring;
struct ctrl_ring *ctrl_ring_open(int *err);
/* Issue one control command and wait for it: the CQE's result (>= 0 or -errno). */
int ctrl_ring_cmd(struct ctrl_ring *ctrl, uint32_t cmd_op, uint32_t dev_id,
                  uint16_t queue_id, void *addr, uint16_t len, uint64_t data);
void ctrl_ring_close(struct ctrl_ring *ctrl);

/* One request, copied out of the descriptor array for the queue server. */
struct ublk_request {
    uint16_t tag;
    uint8_t  op;
    uint8_t  swap;                      /* UBLK_IO_F_SWAP: swap wrote it (on writes only) */
    uint32_t nr_sectors;
    int32_t  result;                    /* set by the queue server before the commit */
    uint64_t start_sector;
};

/* One hardware queue's tags first_tag, first_tag + tag_step, ... below
 * depth, served by one thread: its io_uring, descriptor mmap and per-tag
 * buffers (buffers NULL: the device has UBLK_F_USER_COPY, and the server
 * copies each request's data itself, see queue_server_new). A step above 1
 * needs UBLK_F_PER_IO_DAEMON: each tag is then served by the thread that
 * fetched it.
 * The commands are per tag (fetch_op, commit_op: FETCH_REQ and
 * COMMIT_AND_FETCH_REQ, in the encoding the kernel speaks), or, with
 * `batch` (the device has UBLK_F_BATCH_IO and USER_COPY; one thread serves
 * all the queue's tags), batched: one PREP of every tag, one multishot
 * FETCH that posts many ready tags a completion, one COMMIT a batch. */
struct queue_ring;
struct queue_ring *queue_ring_open(int cdev_fd, uint16_t q_id, uint16_t depth,
                                   uint16_t first_tag, uint16_t tag_step,
                                   void *buffers, uint32_t buf_size,
                                   uint32_t fetch_op, uint32_t commit_op, int batch,
                                   int *err);
/*
 * Commit reqs[0..n_commit) with their results (per tag: fetching the next
 * request for each), submit what is pending, wait for at least one request
 * or a queue_ring_wake(), then copy every ready request into reqs. Returns
 * how many are ready (0: woken), -ENODEV once the queue is shut down
 * (aborted by the kernel or stopped by queue_ring_stop), or another -errno.
 */
int queue_ring_run(struct queue_ring *q, int n_commit,
                   struct ublk_request *reqs, int max_reqs);
/* Like queue_ring_run without the wait: commit commit[0..n_commit), submit,
 * and copy the requests ready now into reqs (which may be `commit`):
 * how many (maybe 0), or -errno. */
int queue_ring_poll(struct queue_ring *q, const struct ublk_request *commit, int n_commit,
                    struct ublk_request *reqs, int max_reqs);
/* Make the queue's queue_ring_run return, with what is ready: any thread. */
void queue_ring_wake(struct queue_ring *q);
/* Wake the queue's thread and make queue_ring_run return -ENODEV: any thread. */
void queue_ring_stop(struct queue_ring *q);
void queue_ring_close(struct queue_ring *q);

#endif
