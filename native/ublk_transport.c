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

#include "ublk_abi.h"
#include "ublk_transport.h"

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
_Static_assert(sizeof(struct ublksrv_ctrl_cmd) == 32, "ublksrv_ctrl_cmd");
_Static_assert(sizeof(struct ublksrv_ctrl_dev_info) == 64, "ublksrv_ctrl_dev_info");
_Static_assert(sizeof(struct ublk_param_basic) == 32, "ublk_param_basic");
_Static_assert(sizeof(struct ublk_param_discard) == 20, "ublk_param_discard");
_Static_assert(offsetof(struct ublk_params, discard) == 40, "ublk_params.discard");
_Static_assert(sizeof(struct ublksrv_io_desc) == 24, "ublksrv_io_desc");
_Static_assert(sizeof(struct ublksrv_io_cmd) == 16, "ublksrv_io_cmd");

#define CTRL_RING_DEPTH 4
/* user_data of the stop poll; request tags are always below this. */
#define STOP_USER_DATA  0xffffffffull

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

struct queue_ring {
    struct io_uring ring;
    const struct ublksrv_io_desc *descs;
    size_t descs_len;
    char *buffers;
    uint32_t buf_size;
    uint32_t fetch_op, commit_op;
    uint16_t q_id, depth;
    int inflight;                       /* commands the kernel holds for us */
    int stop_fd;                        /* eventfd polled in the ring */
    bool stopping;
};

static size_t round_up_page(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

static void prep_io_cmd(struct queue_ring *q, uint32_t op, uint16_t tag, int32_t result)
{
    /* The ring has one SQE per tag plus the stop poll, so one is always free. */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
    struct ublksrv_io_cmd *cmd = (struct ublksrv_io_cmd *)sqe->cmd;

    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = 0;                        /* registered file index */
    sqe->flags = IOSQE_FIXED_FILE;
    sqe->cmd_op = op;
    sqe->user_data = tag;
    cmd->q_id = q->q_id;
    cmd->tag = tag;
    cmd->result = result;
    /* With user copy there are no tag buffers, and the kernel wants none named. */
    cmd->addr = q->buffers ? (uint64_t)(uintptr_t)(q->buffers + (size_t)tag * q->buf_size) : 0;
    q->inflight++;
}

struct queue_ring *queue_ring_open(int cdev_fd, uint16_t q_id, uint16_t depth,
                                   uint16_t first_tag, uint16_t tag_step,
                                   void *buffers, uint32_t buf_size,
                                   uint32_t fetch_op, uint32_t commit_op,
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
    q->stop_fd = -1;

    /* Each queue's descriptors sit at a stride sized for the largest depth. */
    off = (off_t)q_id * round_up_page(UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc));
    q->descs_len = round_up_page((size_t)depth * sizeof(struct ublksrv_io_desc));
    q->descs = mmap(NULL, q->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE, cdev_fd, off);
    if (q->descs == MAP_FAILED) {
        ret = -errno;
        goto free_q;
    }
    q->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (q->stop_fd < 0) {
        ret = -errno;
        goto unmap;
    }
    /* One thread owns the ring: the kernel may then run completion work only
     * when that thread waits for it, without interrupting it (6.1+). */
    ret = io_uring_queue_init(depth + 1, &q->ring, IORING_SETUP_COOP_TASKRUN |
                              IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (ret == -EINVAL)
        ret = io_uring_queue_init(depth + 1, &q->ring, 0);
    if (ret < 0)
        goto close_stop;
    ret = io_uring_register_files(&q->ring, &cdev_fd, 1);
    if (ret < 0)
        goto exit_ring;

    sqe = io_uring_get_sqe(&q->ring);
    io_uring_prep_poll_add(sqe, q->stop_fd, POLLIN);
    sqe->user_data = STOP_USER_DATA;
    for (int tag = first_tag; tag < depth; tag += tag_step ? tag_step : 1)
        prep_io_cmd(q, fetch_op, tag, -1);
    *err = 0;
    return q;

exit_ring:
    io_uring_queue_exit(&q->ring);
close_stop:
    close(q->stop_fd);
unmap:
    munmap((void *)q->descs, q->descs_len);
free_q:
    free(q);
    *err = ret;
    return NULL;
}

int queue_ring_run(struct queue_ring *q, int n_commit,
                   struct ublk_request *reqs, int max_reqs)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int ret, n = 0;

    for (int i = 0; i < n_commit; i++)
        prep_io_cmd(q, q->commit_op, reqs[i].tag, reqs[i].result);

    for (;;) {
        if (q->stopping || q->inflight == 0)
            return -ENODEV;
        ret = io_uring_submit_and_wait(&q->ring, 1);
        if (ret < 0 && ret != -EINTR)
            return ret;

        io_uring_for_each_cqe(&q->ring, head, cqe) {
            if (n == max_reqs)
                break;
            seen++;
            if (cqe->user_data == STOP_USER_DATA) {
                q->stopping = true;
                continue;
            }
            q->inflight--;
            if (cqe->res < 0)           /* UBLK_IO_RES_ABORT: queue going away */
                continue;
            uint16_t tag = (uint16_t)cqe->user_data;
            const volatile struct ublksrv_io_desc *d = &q->descs[tag];
            uint32_t op_flags = d->op_flags;
            struct ublk_request *r = &reqs[n++];
            r->tag = tag;
            r->op = op_flags & 0xff;
            r->flags = op_flags & ~0xffu;
            r->nr_sectors = d->nr_sectors;
            r->start_sector = d->start_sector;
            r->result = 0;
        }
        io_uring_cq_advance(&q->ring, seen);
        seen = 0;
        if (n > 0)
            return n;
    }
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
    close(q->stop_fd);
    munmap((void *)q->descs, q->descs_len);
    free(q);
}
