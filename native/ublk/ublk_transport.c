/* The ublk transport: the control ring and each queue's command ring, over io_uring. See ublk_transport.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/ioctl.h>
#include <liburing.h>

#include "ublk/ublk_abi.h"
#include "ublk/ublk_transport.h"

/* ublk_abi.h writes the kernel's facts as literals (cffi parses it); here
 * the compiler checks them against the kernel's own rules: the ioctl
 * encodings of the commands and the sizes of the wire structs. */
#define CTRL_CMD(dir, nr) dir('u', nr, struct ublksrv_ctrl_cmd)
_Static_assert(UBLK_U_CMD_GET_DEV_INFO == CTRL_CMD(_IOR, 0x02), "GET_DEV_INFO");
_Static_assert(UBLK_U_CMD_ADD_DEV == CTRL_CMD(_IOWR, 0x04), "ADD_DEV");
_Static_assert(UBLK_U_CMD_DEL_DEV == CTRL_CMD(_IOWR, 0x05), "DEL_DEV");
_Static_assert(UBLK_U_CMD_START_DEV == CTRL_CMD(_IOWR, 0x06), "START_DEV");
_Static_assert(UBLK_U_CMD_STOP_DEV == CTRL_CMD(_IOWR, 0x07), "STOP_DEV");
_Static_assert(UBLK_U_CMD_SET_PARAMS == CTRL_CMD(_IOWR, 0x08), "SET_PARAMS");
_Static_assert(UBLK_U_CMD_GET_PARAMS == CTRL_CMD(_IOR, 0x09), "GET_PARAMS");
_Static_assert(UBLK_U_CMD_START_USER_RECOVERY == CTRL_CMD(_IOWR, 0x10), "START_USER_RECOVERY");
_Static_assert(UBLK_U_CMD_END_USER_RECOVERY == CTRL_CMD(_IOWR, 0x11), "END_USER_RECOVERY");
_Static_assert(UBLK_U_CMD_GET_FEATURES == CTRL_CMD(_IOR, 0x13), "GET_FEATURES");
_Static_assert(UBLK_U_CMD_DEL_DEV_ASYNC == CTRL_CMD(_IOR, 0x14), "DEL_DEV_ASYNC");
_Static_assert(UBLK_U_CMD_UPDATE_SIZE == CTRL_CMD(_IOWR, 0x15), "UPDATE_SIZE");
_Static_assert(UBLK_U_CMD_TRY_STOP_DEV == CTRL_CMD(_IOWR, 0x17), "TRY_STOP_DEV");
_Static_assert(UBLK_U_IO_FETCH_REQ == _IOWR('u', UBLK_IO_FETCH_REQ, struct ublksrv_io_cmd),
               "FETCH_REQ");
_Static_assert(UBLK_U_IO_COMMIT_AND_FETCH_REQ
               == _IOWR('u', UBLK_IO_COMMIT_AND_FETCH_REQ, struct ublksrv_io_cmd),
               "COMMIT_AND_FETCH_REQ");
#define BATCH_CMD(nr) _IOWR('u', nr, struct ublk_batch_io)
_Static_assert(UBLK_U_IO_PREP_IO_CMDS == BATCH_CMD(0x25), "PREP_IO_CMDS");
_Static_assert(UBLK_U_IO_COMMIT_IO_CMDS == BATCH_CMD(0x26), "COMMIT_IO_CMDS");
_Static_assert(UBLK_U_IO_FETCH_IO_CMDS == BATCH_CMD(0x27), "FETCH_IO_CMDS");
_Static_assert(sizeof(struct ublk_batch_io) == 16, "ublk_batch_io");
_Static_assert(sizeof(struct ublk_elem_header) == 8, "ublk_elem_header");
_Static_assert(sizeof(struct ublksrv_ctrl_cmd) == 32, "ublksrv_ctrl_cmd");
_Static_assert(sizeof(struct ublksrv_ctrl_dev_info) == 64, "ublksrv_ctrl_dev_info");
_Static_assert(sizeof(struct ublk_param_basic) == 32, "ublk_param_basic");
_Static_assert(sizeof(struct ublk_param_discard) == 20, "ublk_param_discard");
_Static_assert(offsetof(struct ublk_params, discard) == 40, "ublk_params.discard");
_Static_assert(sizeof(struct ublksrv_io_desc) == 24, "ublksrv_io_desc");
_Static_assert(sizeof(struct ublksrv_io_cmd) == 16, "ublksrv_io_cmd");

#define CTRL_RING_DEPTH 4
/* user_data of the stop poll and the batch commands; request tags (the
 * user_data of per-tag commands) are always below these. */
#define STOP_USER_DATA  0xffffffffull
#define PREP_USER_DATA  0xfffffffeull
#define COMMIT_USER_DATA 0xfffffffdull
#define FETCH_USER_DATA 0xfffffffcull
#define WAKE_USER_DATA  0xfffffffbull

/* io_uring's flag for a multishot passthrough command (6.17), newer than
 * the liburing headers we build against. */
#ifndef IORING_URING_CMD_MULTISHOT
#define IORING_URING_CMD_MULTISHOT (1U << 1)
#endif
/* The provided-buffer group the batch FETCH posts tags into. */
#define FETCH_BUF_GROUP 0

struct ctrl_ring {
    struct io_uring ring;
    int fd;
};

struct ctrl_ring *ctrl_ring_open(int *err)
{
    struct ctrl_ring *ctrl = calloc(1, sizeof(*ctrl));
    int ret;

    if (!ctrl) {
        *err = -ENOMEM;
        return NULL;
    }
    ctrl->fd = open("/dev/ublk-control", O_RDWR | O_CLOEXEC);
    if (ctrl->fd < 0) {
        *err = -errno;
        free(ctrl);
        return NULL;
    }
    ret = io_uring_queue_init(CTRL_RING_DEPTH, &ctrl->ring, IORING_SETUP_SQE128);
    if (ret < 0) {
        *err = ret;
        close(ctrl->fd);
        free(ctrl);
        return NULL;
    }
    *err = 0;
    return ctrl;
}

int ctrl_ring_cmd(struct ctrl_ring *ctrl, uint32_t cmd_op, uint32_t dev_id,
                  uint16_t queue_id, void *addr, uint16_t len, uint64_t data)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ctrl->ring);
    struct io_uring_cqe *cqe;
    struct ublksrv_ctrl_cmd *cmd;
    int ret;

    if (!sqe)
        return -EBUSY;
    memset(sqe, 0, 2 * sizeof(*sqe));   /* SQE128: two slots */
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = ctrl->fd;
    sqe->cmd_op = cmd_op;
    cmd = (struct ublksrv_ctrl_cmd *)sqe->cmd;
    cmd->dev_id = dev_id;
    cmd->queue_id = queue_id;
    cmd->addr = (uint64_t)(uintptr_t)addr;
    cmd->len = len;
    cmd->data[0] = data;

    ret = io_uring_submit(&ctrl->ring);
    if (ret < 0)
        return ret;
    do {
        ret = io_uring_wait_cqe(&ctrl->ring, &cqe);
    } while (ret == -EINTR);
    if (ret < 0)
        return ret;
    ret = cqe->res;
    io_uring_cqe_seen(&ctrl->ring, cqe);
    return ret;
}

void ctrl_ring_close(struct ctrl_ring *ctrl)
{
    io_uring_queue_exit(&ctrl->ring);
    close(ctrl->fd);
    free(ctrl);
}

/*
 * With UBLK_F_BATCH_IO the kernel posts ready tags, 2 bytes each, into
 * buffers we provide in a buffer ring: each completion of the multishot
 * FETCH fills one whole buffer (any number of tags up to its size) and
 * names it, and we hand it back at once. One buffer per tag is the most
 * completions that can be outstanding, so the kernel never runs out.
 */
struct batch_io {
    struct io_uring_buf_ring *br;
    size_t br_len;
    char *tag_bufs;                     /* br_entries buffers of tag_buf_bytes */
    uint32_t br_entries, tag_buf_bytes;
    struct ublk_elem_header *elems;     /* the PREP's, then each COMMIT's, elements */
    bool elems_busy;                    /* a PREP or COMMIT that reads them is pending */
    bool fetch_armed;                   /* the multishot FETCH is in the kernel */
    uint16_t *ready;                    /* tags posted, not yet handed over */
    int n_ready;
};

struct queue_ring {
    struct io_uring ring;
    const struct ublksrv_io_desc *descs;
    size_t descs_len;
    char *buffers;
    uint32_t buf_size;
    uint32_t fetch_op, commit_op;
    uint16_t q_id, depth;
    int inflight;                       /* per-tag commands the kernel holds for us */
    int held;                           /* per-tag requests handed over, not yet committed */
    int stop_fd;                        /* eventfd polled in the ring */
    bool stopping;
    int wake_fd;                        /* eventfd polled in the ring (multishot) */
    bool woken;                         /* queue_ring_wake() since queue_ring_run last returned */
    bool wake_armed;
    int error;                          /* batch: how the queue ended (-errno) */
    struct batch_io *batch;             /* NULL: per-tag commands */
};

static size_t round_up_page(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

/* An I/O command on /dev/ublkcN (the ring's registered file), its command
 * area zeroed for the caller to fill. The caller knows there is room. */
static struct io_uring_sqe *io_cmd_sqe(struct queue_ring *q, uint32_t op, uint64_t user_data)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = 0;                        /* registered file index */
    sqe->flags = IOSQE_FIXED_FILE;
    sqe->cmd_op = op;
    sqe->user_data = user_data;
    return sqe;
}

static void prep_io_cmd(struct queue_ring *q, uint32_t op, uint16_t tag, int32_t result)
{
    /* The ring has one SQE per tag plus the stop poll, so one is always free. */
    struct io_uring_sqe *sqe = io_cmd_sqe(q, op, tag);
    struct ublksrv_io_cmd *cmd = (struct ublksrv_io_cmd *)sqe->cmd;

    cmd->q_id = q->q_id;
    cmd->tag = tag;
    cmd->result = result;
    /* With user copy there are no tag buffers, and the kernel wants none named. */
    cmd->addr = q->buffers ? (uint64_t)(uintptr_t)(q->buffers + (size_t)tag * q->buf_size) : 0;
    q->inflight++;
}

/* A request as the kernel describes it in tag's descriptor. */
static void read_request(const struct queue_ring *q, uint16_t tag, struct ublk_request *r)
{
    const volatile struct ublksrv_io_desc *d = &q->descs[tag];

    r->tag = tag;
    /* Of the flags above the op only swap's says something to a RAM store
     * (FUA and the like ask for nothing it does not do anyway). */
    r->op = d->op_flags & 0xff;
    r->swap = (d->op_flags & UBLK_IO_F_SWAP) != 0;
    r->nr_sectors = d->nr_sectors;
    r->start_sector = d->start_sector;
    r->result = 0;
}

static struct io_uring_sqe *batch_sqe(struct queue_ring *q, uint32_t op, uint64_t user_data,
                                       uint16_t nr_elem, uint8_t elem_bytes)
{
    /* At most one PREP or COMMIT, one FETCH and the stop poll are pending:
     * the ring has room for them (queue_ring_open). */
    struct io_uring_sqe *sqe = io_cmd_sqe(q, op, user_data);
    struct ublk_batch_io *cmd = (struct ublk_batch_io *)sqe->cmd;

    cmd->q_id = q->q_id;
    cmd->nr_elem = nr_elem;
    cmd->elem_bytes = elem_bytes;
    return sqe;
}

/* PREP or COMMIT b->elems[0..n); the kernel reads them when it is issued. */
static void batch_send_elems(struct queue_ring *q, uint32_t op, uint64_t user_data, int n)
{
    struct io_uring_sqe *sqe = batch_sqe(q, op, user_data, (uint16_t)n, sizeof(struct ublk_elem_header));

    sqe->addr = (uint64_t)(uintptr_t)q->batch->elems;
    sqe->len = (uint32_t)n * sizeof(struct ublk_elem_header);
    q->batch->elems_busy = true;
}

static void batch_arm_fetch(struct queue_ring *q)
{
    struct io_uring_sqe *sqe = batch_sqe(q, UBLK_U_IO_FETCH_IO_CMDS, FETCH_USER_DATA,
                                         q->depth, sizeof(uint16_t));

    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = FETCH_BUF_GROUP;
    sqe->uring_cmd_flags = IORING_URING_CMD_MULTISHOT;
    q->batch->fetch_armed = true;
}

/* The tags of one FETCH completion into b->ready; its buffer goes back. */
static void batch_take_tags(struct queue_ring *q, const struct io_uring_cqe *cqe)
{
    struct batch_io *b = q->batch;
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    const uint16_t *tags;

    if (bid >= b->br_entries)
        return;
    tags = (const uint16_t *)(b->tag_bufs + (size_t)bid * b->tag_buf_bytes);
    for (int i = 0; cqe->res > 0 && i < cqe->res / 2; i++)
        if (tags[i] < q->depth && b->n_ready < q->depth)
            b->ready[b->n_ready++] = tags[i];
    io_uring_buf_ring_add(b->br, (void *)tags, b->tag_buf_bytes, (unsigned short)bid,
                          io_uring_buf_ring_mask(b->br_entries), 0);
    io_uring_buf_ring_advance(b->br, 1);
}

/* The wake poll's completion: note it, empty the eventfd, and arm the
 * poll again if the kernel ended it. */
static void take_wake(struct queue_ring *q, const struct io_uring_cqe *cqe)
{
    uint64_t count;

    q->woken = true;
    if (read(q->wake_fd, &count, sizeof(count)) < 0) {}     /* EAGAIN: already emptied */
    if (!(cqe->flags & IORING_CQE_F_MORE))
        q->wake_armed = false;
}

static void arm_wake(struct queue_ring *q)
{
    struct io_uring_sqe *sqe;

    if (q->wake_armed || !(sqe = io_uring_get_sqe(&q->ring)))
        return;
    io_uring_prep_poll_multishot(sqe, q->wake_fd, POLLIN);
    sqe->user_data = WAKE_USER_DATA;
    q->wake_armed = true;
}

static void batch_reap(struct queue_ring *q)
{
    struct batch_io *b = q->batch;
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;

    io_uring_for_each_cqe(&q->ring, head, cqe) {
        seen++;
        switch (cqe->user_data) {
        case STOP_USER_DATA:
            q->stopping = true;
            break;
        case WAKE_USER_DATA:
            take_wake(q, cqe);
            break;
        case PREP_USER_DATA:
            b->elems_busy = false;
            if (cqe->res < 0)
                q->error = cqe->res;
            break;
        case COMMIT_USER_DATA:
            /* A commit fails only for tags the kernel has taken back
             * (the queue is going away): nothing to redo. */
            b->elems_busy = false;
            break;
        case FETCH_USER_DATA:
            if (cqe->flags & IORING_CQE_F_BUFFER)
                batch_take_tags(q, cqe);
            if (cqe->flags & IORING_CQE_F_MORE)
                break;
            /* The multishot FETCH ended: out of buffers or memory for a
             * moment (the kernel keeps the tags it could not post), so
             * send it again; or the queue is going away. */
            b->fetch_armed = false;
            if (cqe->res < 0 && cqe->res != -ENOBUFS && cqe->res != -ENOMEM)
                q->error = cqe->res;
            break;
        }
    }
    io_uring_cq_advance(&q->ring, seen);
}

/* Submit what is pending, wait for a completion if `wait`, and reap. Not
 * waiting still asks for events: under DEFER_TASKRUN the FETCH's new tags
 * are posted only when this thread enters the ring for them. */
static int batch_wait(struct queue_ring *q, bool wait)
{
    int ret = wait ? io_uring_submit_and_wait(&q->ring, 1) : io_uring_submit_and_get_events(&q->ring);

    if (ret < 0 && ret != -EINTR)
        return ret;
    batch_reap(q);
    return q->stopping ? -ENODEV : q->error;
}

/* batch_wait with the multishot FETCH armed, so that ready tags can come. */
static int batch_fetch(struct queue_ring *q, bool wait)
{
    if (!q->batch->fetch_armed)
        batch_arm_fetch(q);
    return batch_wait(q, wait);
}

/* Memory for the batch commands, touched now so that it is resident (and
 * locked, under the worker's mlockall) before any request. */
static void *batch_alloc(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return NULL;
    memset(p, 0, len);
    return p;
}

static void batch_free(struct queue_ring *q)
{
    struct batch_io *b = q->batch;

    if (!b)
        return;
    if (b->br)
        munmap(b->br, b->br_len);
    if (b->tag_bufs)
        munmap(b->tag_bufs, round_up_page((size_t)b->br_entries * b->tag_buf_bytes));
    if (b->elems)
        munmap(b->elems, round_up_page((size_t)q->depth * sizeof(*b->elems)));
    if (b->ready)
        munmap(b->ready, round_up_page((size_t)q->depth * sizeof(*b->ready)));
    free(b);
    q->batch = NULL;
}

/* The buffer ring and buffers, registered with the ring, and the PREP of
 * every tag and the first FETCH queued for the first submit. */
static int batch_open(struct queue_ring *q)
{
    struct io_uring_buf_reg reg;
    struct batch_io *b = calloc(1, sizeof(*b));
    int ret;

    if (!b)
        return -ENOMEM;
    q->batch = b;
    for (b->br_entries = 1; b->br_entries < q->depth; b->br_entries <<= 1)
        ;
    /* Up to 128 tags a completion: the kernel posts no more at once. */
    b->tag_buf_bytes = (q->depth < 128 ? q->depth : 128) * sizeof(uint16_t);
    b->br_len = round_up_page(b->br_entries * sizeof(struct io_uring_buf));
    b->br = batch_alloc(b->br_len);
    b->tag_bufs = batch_alloc(round_up_page((size_t)b->br_entries * b->tag_buf_bytes));
    b->elems = batch_alloc(round_up_page((size_t)q->depth * sizeof(*b->elems)));
    b->ready = batch_alloc(round_up_page((size_t)q->depth * sizeof(*b->ready)));
    if (!b->br || !b->tag_bufs || !b->elems || !b->ready)
        return -ENOMEM;

    reg = (struct io_uring_buf_reg){ .ring_addr = (uint64_t)(uintptr_t)b->br,
                                     .ring_entries = b->br_entries, .bgid = FETCH_BUF_GROUP };
    ret = io_uring_register_buf_ring(&q->ring, &reg, 0);
    if (ret < 0)
        return ret;
    io_uring_buf_ring_init(b->br);
    for (unsigned i = 0; i < b->br_entries; i++)
        io_uring_buf_ring_add(b->br, b->tag_bufs + (size_t)i * b->tag_buf_bytes, b->tag_buf_bytes,
                              (unsigned short)i, io_uring_buf_ring_mask(b->br_entries), (int)i);
    io_uring_buf_ring_advance(b->br, (int)b->br_entries);

    for (int tag = 0; tag < q->depth; tag++)
        b->elems[tag] = (struct ublk_elem_header){ .tag = (uint16_t)tag };
    batch_send_elems(q, UBLK_U_IO_PREP_IO_CMDS, PREP_USER_DATA, q->depth);
    batch_arm_fetch(q);
    return 0;
}

struct queue_ring *queue_ring_open(int cdev_fd, uint16_t q_id, uint16_t depth,
                                   uint16_t first_tag, uint16_t tag_step,
                                   void *buffers, uint32_t buf_size,
                                   uint32_t fetch_op, uint32_t commit_op, int batch,
                                   int *err)
{
    struct queue_ring *q = calloc(1, sizeof(*q));
    struct io_uring_sqe *sqe;
    off_t off;
    int ret;

    if (!q) {
        *err = -ENOMEM;
        return NULL;
    }
    q->q_id = q_id;
    q->depth = depth;
    q->buffers = buffers;
    q->buf_size = buf_size;
    q->fetch_op = fetch_op;
    q->commit_op = commit_op;
    q->stop_fd = q->wake_fd = -1;

    /* Each queue's descriptors sit at a stride sized for the largest depth. */
    off = (off_t)q_id * round_up_page(UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc));
    q->descs_len = round_up_page((size_t)depth * sizeof(struct ublksrv_io_desc));
    q->descs = mmap(NULL, q->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE, cdev_fd, off);
    if (q->descs == MAP_FAILED) {
        ret = -errno;
        goto free_q;
    }
    q->stop_fd = eventfd(0, EFD_CLOEXEC);
    q->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->stop_fd < 0 || q->wake_fd < 0) {
        ret = -errno;
        goto close_fds;
    }
    /* One thread owns the ring: the kernel may then run completion work only
     * when that thread waits for it, without interrupting it (6.1+). Room
     * for a command per tag and the stop and wake polls, and completions
     * for twice that: a batch FETCH may post one per tag. */
    unsigned entries = depth + 2u < 4 ? 4 : depth + 2u;
    ret = io_uring_queue_init(entries, &q->ring, IORING_SETUP_COOP_TASKRUN |
                              IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (ret == -EINVAL)
        ret = io_uring_queue_init(entries, &q->ring, 0);
    if (ret < 0)
        goto close_fds;
    ret = io_uring_register_files(&q->ring, &cdev_fd, 1);
    if (ret < 0)
        goto exit_ring;

    sqe = io_uring_get_sqe(&q->ring);
    io_uring_prep_poll_add(sqe, q->stop_fd, POLLIN);
    sqe->user_data = STOP_USER_DATA;
    arm_wake(q);
    if (batch) {
        ret = batch_open(q);
        if (ret < 0)
            goto exit_ring;
    } else {
        for (int tag = first_tag; tag < depth; tag += tag_step ? tag_step : 1)
            prep_io_cmd(q, fetch_op, tag, -1);
    }
    *err = 0;
    return q;

exit_ring:
    io_uring_queue_exit(&q->ring);
    batch_free(q);
close_fds:
    if (q->stop_fd >= 0)
        close(q->stop_fd);
    if (q->wake_fd >= 0)
        close(q->wake_fd);
    munmap((void *)q->descs, q->descs_len);
free_q:
    free(q);
    *err = ret;
    return NULL;
}

/* The requests whose fetches completed, into reqs (at most max_reqs): how
 * many. The stop poll's completion sets q->stopping. */
static int reap_requests(struct queue_ring *q, struct ublk_request *reqs, int max_reqs)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int n = 0;

    io_uring_for_each_cqe(&q->ring, head, cqe) {
        if (n == max_reqs)
            break;
        seen++;
        if (cqe->user_data == STOP_USER_DATA) {
            q->stopping = true;
            continue;
        }
        if (cqe->user_data == WAKE_USER_DATA) {
            take_wake(q, cqe);
            continue;
        }
        q->inflight--;
        if (cqe->res < 0)               /* UBLK_IO_RES_ABORT: queue going away */
            continue;
        read_request(q, (uint16_t)cqe->user_data, &reqs[n++]);
        q->held++;
    }
    io_uring_cq_advance(&q->ring, seen);
    return n;
}

/* Up to max_reqs of the batch's ready tags into reqs. */
static int batch_take_requests(struct queue_ring *q, struct ublk_request *reqs, int max_reqs)
{
    struct batch_io *b = q->batch;
    int n = b->n_ready < max_reqs ? b->n_ready : max_reqs;

    for (int i = 0; i < n; i++)
        read_request(q, b->ready[i], &reqs[i]);
    b->n_ready -= n;
    memmove(b->ready, b->ready + n, (size_t)b->n_ready * sizeof(*b->ready));
    return n;
}

/* Queue the commit of reqs[0..n), not yet submitted. */
static int prep_commits(struct queue_ring *q, const struct ublk_request *reqs, int n)
{
    struct batch_io *b = q->batch;
    int ret = 0;

    if (!b) {
        for (int i = 0; i < n; i++)
            prep_io_cmd(q, q->commit_op, reqs[i].tag, reqs[i].result);
        q->held -= n;
        return 0;
    }
    /* The last PREP or COMMIT read its elements when it was issued, in the
     * last submit; its completion is nearly always in already. */
    while (n > 0 && b->elems_busy && ret == 0)
        ret = batch_wait(q, true);
    if (ret < 0)
        return ret;
    if (n > 0) {
        for (int i = 0; i < n; i++)
            b->elems[i] = (struct ublk_elem_header){ .tag = reqs[i].tag, .result = reqs[i].result };
        batch_send_elems(q, UBLK_U_IO_COMMIT_IO_CMDS, COMMIT_USER_DATA, n);
    }
    return 0;
}

int queue_ring_poll(struct queue_ring *q, const struct ublk_request *commit, int n_commit,
                    struct ublk_request *reqs, int max_reqs)
{
    int ret = prep_commits(q, commit, n_commit);

    if (ret < 0)
        return ret;
    if (q->batch) {
        ret = batch_fetch(q, false);
        return ret < 0 ? ret : batch_take_requests(q, reqs, max_reqs);
    }
    ret = io_uring_submit_and_get_events(&q->ring);
    if (ret < 0 && ret != -EINTR)
        return ret;
    ret = reap_requests(q, reqs, max_reqs);
    return q->stopping ? -ENODEV : ret;
}

int queue_ring_run(struct queue_ring *q, int n_commit,
                   struct ublk_request *reqs, int max_reqs)
{
    int ret, n;

    ret = prep_commits(q, reqs, n_commit);
    if (ret < 0)
        return ret;
    arm_wake(q);
    if (q->batch) {
        do {
            if ((ret = batch_fetch(q, q->batch->n_ready == 0 && !q->woken)) < 0)
                return ret;
        } while (q->batch->n_ready == 0 && !q->woken);
        q->woken = false;
        return batch_take_requests(q, reqs, max_reqs);
    }
    for (;;) {
        /* Gone: stopped, or every fetch aborted and nothing held to commit. */
        if (q->stopping || (q->inflight == 0 && q->held == 0))
            return -ENODEV;
        ret = io_uring_submit_and_wait(&q->ring, 1);
        if (ret < 0 && ret != -EINTR)
            return ret;
        n = reap_requests(q, reqs, max_reqs);
        if (n > 0 || q->woken) {
            q->woken = false;
            return n;
        }
    }
}

void queue_ring_wake(struct queue_ring *q)
{
    uint64_t one = 1;

    if (write(q->wake_fd, &one, sizeof(one)) < 0) {}      /* EAGAIN: a wake is pending anyway */
}

void queue_ring_stop(struct queue_ring *q)
{
    uint64_t one = 1;
    /* An eventfd write cannot block here: the counter never nears overflow. */
    if (write(q->stop_fd, &one, sizeof(one)) < 0) {}
}

void queue_ring_close(struct queue_ring *q)
{
    io_uring_queue_exit(&q->ring);      /* cancels the FETCHes still held */
    batch_free(q);
    close(q->stop_fd);
    close(q->wake_fd);
    munmap((void *)q->descs, q->descs_len);
    free(q);
}
