// SPDX-License-Identifier: GPL-2.0
/*
 * tcpoom kernel programs: every TCP socket-memory decision, with the figures
 * that drove it. One object holds every attach method of every family; the
 * loader (tracer/kernel/loader.py) turns on, by autoload, only the programs of the
 * methods its probe plan chose for the running kernel.
 *
 *   family       best ... fallback
 *   oom_check    fexit tcp_check_oom, kretprobe tcp_check_oom,
 *                kretprobe tcp_out_of_resources, tp_btf/raw_tp tcp_send_reset
 *                (function tiers: plus tcp_close/__tcp_close to tell the close
 *                path, and tcp_send_active_reset for close-path aborts whose
 *                tcp_check_oom call was inlined into __tcp_close)
 *   tw_overflow  fexit inet_twsk_alloc, kretprobe inet_twsk_alloc,
 *                tp_btf/raw_tp inet_sock_set_state (inference)
 *   mem_exceed   tp_btf/raw_tp sock_exceed_buf_limit
 *   pressure     fentry/kprobe tcp_enter_memory_pressure, tcp_leave_memory_pressure
 *                (else sampled from /proc in user space)
 *   mem_drop     tp_btf/raw_tp kfree_skb, reasons PROTO_MEM, TCP_OFO_QUEUE_PRUNE,
 *                SOCKET_BACKLOG (rx_sk from 6.11; before, the segment's headers)
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Keeps the event type in the object's BTF, so the layout can be checked. */
struct tcpoom_event _event_type = {};

/* One header per family (the .rodata config, maps and reads they share are
 * in common.bpf.h; the logic shared with the bcc engine in verdict.h). */
#include "oom_check.bpf.h"
#include "tw_overflow.bpf.h"
#include "mem_exceed.bpf.h"
#include "pressure.bpf.h"
#include "mem_drop.bpf.h"
#include "owner_hooks.bpf.h"	/* notes the sockets' owners (issue 14) */
