/*
 * The ublk kernel interface, declared once for both the C core and cffi.
 *
 * Debian's linux-libc-dev ships the 6.1 <linux/ublk_cmd.h>, which lacks later
 * commands, so the facts we use live here instead (source: the kernel's
 * include/uapi/linux/ublk_cmd.h). cffi parses this file as its cdef, so it
 * holds only plain structs and literal #defines, no expressions (its include
 * guard and includes are dropped for cffi by build_native.py). The encodings
 * and sizes are checked against the kernel's rules in ublk_transport.c.
 */
#ifndef TRUENO_UBLK_ABI_H
#define TRUENO_UBLK_ABI_H

#include <stdint.h>

/* Control commands: ioctl-style encodings (_IOR/_IOWR('u', nr, 32 bytes))
 * and the legacy plain numbers some kernels still need. */
#define UBLK_U_CMD_GET_DEV_INFO         0x80207502
#define UBLK_U_CMD_ADD_DEV              0xc0207504
#define UBLK_U_CMD_DEL_DEV              0xc0207505
#define UBLK_U_CMD_START_DEV            0xc0207506
#define UBLK_U_CMD_STOP_DEV             0xc0207507
#define UBLK_U_CMD_SET_PARAMS           0xc0207508
#define UBLK_U_CMD_GET_PARAMS           0x80207509
#define UBLK_U_CMD_START_USER_RECOVERY  0xc0207510
#define UBLK_U_CMD_END_USER_RECOVERY    0xc0207511
#define UBLK_U_CMD_GET_FEATURES         0x80207513
#define UBLK_U_CMD_DEL_DEV_ASYNC        0x80207514      /* 6.9 */
#define UBLK_U_CMD_UPDATE_SIZE          0xc0207515      /* 6.16, UPDATE_SIZE */
#define UBLK_U_CMD_QUIESCE_DEV          0xc0207516      /* 6.16, QUIESCE */
#define UBLK_U_CMD_TRY_STOP_DEV         0xc0207517      /* 7.0, SAFE_STOP_DEV */

#define UBLK_CMD_GET_DEV_INFO           0x02
#define UBLK_CMD_ADD_DEV                0x04
#define UBLK_CMD_DEL_DEV                0x05
#define UBLK_CMD_START_DEV              0x06
#define UBLK_CMD_STOP_DEV               0x07
#define UBLK_CMD_SET_PARAMS             0x08
#define UBLK_CMD_GET_PARAMS             0x09
#define UBLK_CMD_START_USER_RECOVERY    0x10
#define UBLK_CMD_END_USER_RECOVERY      0x11
#define UBLK_CMD_GET_FEATURES           0x13
#define UBLK_CMD_DEL_DEV_ASYNC          0x14
#define UBLK_CMD_UPDATE_SIZE            0x15
#define UBLK_CMD_QUIESCE_DEV            0x16
#define UBLK_CMD_TRY_STOP_DEV           0x17

/* I/O commands, sent on /dev/ublkcN. */
#define UBLK_U_IO_FETCH_REQ             0xc0107520
#define UBLK_U_IO_COMMIT_AND_FETCH_REQ  0xc0107521
#define UBLK_IO_FETCH_REQ               0x20
#define UBLK_IO_COMMIT_AND_FETCH_REQ    0x21
/* BATCH_IO (7.0) replaces the two above: PREP registers tags once, a
 * multishot FETCH posts ready tags (2 bytes each) into provided buffers,
 * COMMIT completes many requests; all carry a struct ublk_batch_io. */
#define UBLK_U_IO_PREP_IO_CMDS          0xc0107525
#define UBLK_U_IO_COMMIT_IO_CMDS        0xc0107526
#define UBLK_U_IO_FETCH_IO_CMDS         0xc0107527

/* Feature flags (ADD_DEV flags; GET_FEATURES). */
#define UBLK_F_SUPPORT_ZERO_COPY        0x1
#define UBLK_F_URING_CMD_COMP_IN_TASK   0x2
#define UBLK_F_NEED_GET_DATA            0x4
#define UBLK_F_USER_RECOVERY            0x8
#define UBLK_F_USER_RECOVERY_REISSUE    0x10
#define UBLK_F_UNPRIVILEGED_DEV         0x20
#define UBLK_F_CMD_IOCTL_ENCODE         0x40
#define UBLK_F_USER_COPY                0x80
#define UBLK_F_ZONED                    0x100
#define UBLK_F_USER_RECOVERY_FAIL_IO    0x200
#define UBLK_F_UPDATE_SIZE              0x400
#define UBLK_F_AUTO_BUF_REG             0x800
#define UBLK_F_QUIESCE                  0x1000
#define UBLK_F_PER_IO_DAEMON            0x2000
#define UBLK_F_BUF_REG_OFF_DAEMON       0x4000
#define UBLK_F_BATCH_IO                 0x8000
#define UBLK_F_INTEGRITY                0x10000
#define UBLK_F_SAFE_STOP_DEV            0x20000
#define UBLK_F_NO_AUTO_PART_SCAN        0x40000

/* The block layer's sector: start_sector and nr_sectors count 512 bytes. */
#define SECTOR_SHIFT                    9

/* Limits: queue depth (include/uapi/linux/ublk_cmd.h); the highest device
 * number, (1 << MINORBITS) - 1 (drivers/block/ublk_drv.c, UBLK_MINORS). */
#define UBLK_MAX_QUEUE_DEPTH            4096
#define UBLK_MAX_DEV_ID                 1048575

/* Device states (ublksrv_ctrl_dev_info.state). */
#define UBLK_S_DEV_DEAD                 0
#define UBLK_S_DEV_LIVE                 1
#define UBLK_S_DEV_QUIESCED             2
#define UBLK_S_DEV_FAIL_IO              3

/* Request operations (low 8 bits of ublksrv_io_desc.op_flags) and flags. */
#define UBLK_IO_OP_READ                 0
#define UBLK_IO_OP_WRITE                1
#define UBLK_IO_OP_FLUSH                2
#define UBLK_IO_OP_DISCARD              3
#define UBLK_IO_OP_WRITE_SAME           4
#define UBLK_IO_OP_WRITE_ZEROES         5
#define UBLK_IO_F_FUA                   0x2000
#define UBLK_IO_F_SWAP                  0x10000

/* Parameter types and basic attributes (struct ublk_params). */
#define UBLK_PARAM_TYPE_BASIC           1
#define UBLK_PARAM_TYPE_DISCARD         2
#define UBLK_ATTR_READ_ONLY             1
#define UBLK_ATTR_ROTATIONAL            2
#define UBLK_ATTR_VOLATILE_CACHE        4
#define UBLK_ATTR_FUA                   8

#define UBLK_IO_RES_ABORT               -19

/* With USER_COPY, a request's data is read and written with pread/pwrite
 * on /dev/ublkcN at UBLKSRV_IO_BUF_OFFSET + (q_id << UBLK_QID_OFF) +
 * (tag << UBLK_TAG_OFF) + the byte offset in the request. */
#define UBLKSRV_IO_BUF_OFFSET           0x80000000
#define UBLK_TAG_OFF                    25
#define UBLK_QID_OFF                    41

struct ublksrv_ctrl_cmd {               /* 32 bytes, in a SQE128's command area */
    uint32_t dev_id;
    uint16_t queue_id;                  /* 0xffff when not a queue command */
    uint16_t len;
    uint64_t addr;
    uint64_t data[1];
    uint16_t dev_path_len;
    uint16_t pad;
    uint32_t reserved;
};

struct ublksrv_ctrl_dev_info {          /* 64 bytes */
    uint16_t nr_hw_queues;
    uint16_t queue_depth;
    uint16_t state;
    uint16_t pad0;
    uint32_t max_io_buf_bytes;
    uint32_t dev_id;
    int32_t  ublksrv_pid;
    uint32_t pad1;
    uint64_t flags;
    uint64_t ublksrv_flags;
    uint32_t owner_uid;
    uint32_t owner_gid;
    uint64_t reserved1;
    uint64_t reserved2;
};

struct ublk_param_basic {
    uint32_t attrs;
    uint8_t  logical_bs_shift;
    uint8_t  physical_bs_shift;
    uint8_t  io_opt_shift;
    uint8_t  io_min_shift;
    uint32_t max_sectors;
    uint32_t chunk_sectors;
    uint64_t dev_sectors;
    uint64_t virt_boundary_mask;
};

struct ublk_param_discard {
    uint32_t discard_alignment;
    uint32_t discard_granularity;
    uint32_t max_discard_sectors;
    uint32_t max_write_zeroes_sectors;
    uint16_t max_discard_segments;
    uint16_t reserved0;
};

struct ublk_params {                    /* `len` says how much of it we pass */
    uint32_t len;
    uint32_t types;
    struct ublk_param_basic basic;
    struct ublk_param_discard discard;
};

struct ublksrv_io_desc {                /* 24 bytes, mmapped from /dev/ublkcN */
    uint32_t op_flags;
    uint32_t nr_sectors;
    uint64_t start_sector;
    uint64_t addr;
};

struct ublksrv_io_cmd {                 /* 16 bytes, in a SQE's command area */
    uint16_t q_id;
    uint16_t tag;
    int32_t  result;
    uint64_t addr;
};

struct ublk_batch_io {                  /* 16 bytes, in a SQE's command area */
    uint16_t q_id;
    uint16_t flags;                     /* UBLK_BATCH_F_*: none with USER_COPY */
    uint16_t nr_elem;
    uint8_t  elem_bytes;                /* PREP/COMMIT: 8 here; FETCH: 2 (a tag) */
    uint8_t  reserved;
    uint64_t reserved2;
};

struct ublk_elem_header {               /* one PREP/COMMIT element, at sqe->addr */
    uint16_t tag;
    uint16_t buf_index;                 /* AUTO_BUF_REG only */
    int32_t  result;                    /* COMMIT only */
};

#endif
