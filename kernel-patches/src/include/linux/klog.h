/* SPDX-License-Identifier: GPL-2.0 */
/*
 * klog - cheap hooks that hand raw or formatted records to one handler
 *
 * klog() and klog_printk() calls may stay in code permanently: while no
 * handler is registered each call costs one static-key branch and its
 * arguments are not evaluated.  A handler, usually a module writing into
 * a relay channel, registers with register_klog_handler().
 */
#ifndef _LINUX_KLOG_H
#define _LINUX_KLOG_H

#include <linux/compiler.h>
#include <linux/errno.h>
#include <linux/jump_label.h>
#include <linux/kconfig.h>
#include <linux/types.h>

/* Size of the per-CPU buffer klog_printk() formats into, NUL included. */
#define KLOG_PRINTK_BUF_SIZE	1024

/**
 * struct klog_handler_ops - the klog handler
 * @log: called for every record with its bytes.  It runs in the context
 *	of the klog() or klog_printk() caller, which may be hard interrupt
 *	context, with interrupts possibly disabled, inside an RCU read-side
 *	critical section: it must not sleep and may take only irq-safe
 *	locks.  @data is valid only during the call.  Returns 0 when the
 *	record was accepted or a negative error code when it was dropped.
 */
struct klog_handler_ops {
	int (*log)(const void *data, size_t len);
};

#if IS_REACHABLE(CONFIG_KLOG)

DECLARE_STATIC_KEY_FALSE(klog_key);

int __klog(const void *data, size_t len);
__printf(1, 2) int __klog_printk(const char *fmt, ...);
int register_klog_handler(const struct klog_handler_ops *ops);
void unregister_klog_handler(const struct klog_handler_ops *ops);

/**
 * klog() - hand a raw record to the klog handler
 * @data: record bytes
 * @len: record length in bytes
 *
 * Callable from any context but NMI.
 *
 * Return: @len when the handler accepted the record, 0 when no handler
 * is registered, or the handler's negative error code.
 */
static inline int klog(const void *data, size_t len)
{
	if (static_branch_unlikely(&klog_key))
		return __klog(data, len);
	return 0;
}

/**
 * klog_printk() - format a record and hand it to the klog handler
 * @fmt: printf-style format string
 * @...: arguments for @fmt
 *
 * The record is formatted with interrupts disabled into a per-CPU buffer
 * of %KLOG_PRINTK_BUF_SIZE bytes (longer output is truncated; no NUL is
 * passed on).  While no handler is registered the arguments are not
 * evaluated.  Callable from any context but NMI.
 *
 * Return: the record length when the handler accepted it, 0 when no
 * handler is registered, or the handler's negative error code.
 */
#define klog_printk(fmt, ...)						\
({									\
	int __klog_ret = 0;						\
									\
	if (static_branch_unlikely(&klog_key))				\
		__klog_ret = __klog_printk(fmt, ##__VA_ARGS__);		\
	__klog_ret;							\
})

#else /* !IS_REACHABLE(CONFIG_KLOG) */

static inline int klog(const void *data, size_t len)
{
	return 0;
}

static inline __printf(1, 2) int klog_printk(const char *fmt, ...)
{
	return 0;
}

static inline int register_klog_handler(const struct klog_handler_ops *ops)
{
	return -EOPNOTSUPP;
}

static inline void
unregister_klog_handler(const struct klog_handler_ops *ops)
{
}

#endif /* IS_REACHABLE(CONFIG_KLOG) */

#endif /* _LINUX_KLOG_H */
