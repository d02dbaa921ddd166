// SPDX-License-Identifier: GPL-2.0
/*
 * klog - hand raw or formatted records to a single registered handler
 *
 * The handler pointer is RCU-protected and a static key guards every call
 * site, so that klog() and klog_printk() cost one patched-out branch while
 * no handler is registered.
 */

#include <linux/export.h>
#include <linux/irqflags.h>
#include <linux/jump_label.h>
#include <linux/klog.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/rcupdate.h>
#include <linux/sprintf.h>
#include <linux/stdarg.h>

static DEFINE_MUTEX(klog_mutex);	/* serialises handler (un)registration */
static const struct klog_handler_ops __rcu *klog_handler;

DEFINE_STATIC_KEY_FALSE(klog_key);
EXPORT_SYMBOL_GPL(klog_key);

struct klog_printk_buf {
	char buf[KLOG_PRINTK_BUF_SIZE];
};

static DEFINE_PER_CPU(struct klog_printk_buf, klog_printk_bufs);

/**
 * __klog() - hand a raw record to the klog handler
 * @data: record bytes
 * @len: record length in bytes
 *
 * The out-of-line part of klog(); call klog() instead.
 *
 * Return: @len when the handler accepted the record, 0 when no handler
 * is registered, or the handler's negative error code.
 */
int __klog(const void *data, size_t len)
{
	const struct klog_handler_ops *ops;
	int ret = 0;

	rcu_read_lock();
	ops = rcu_dereference(klog_handler);
	if (ops) {
		ret = ops->log(data, len);
		if (!ret)
			ret = min_t(size_t, len, INT_MAX);
	}
	rcu_read_unlock();

	return ret;
}
EXPORT_SYMBOL_GPL(__klog);

/**
 * __klog_printk() - format a record and hand it to the klog handler
 * @fmt: printf-style format string
 * @...: arguments for @fmt
 *
 * The out-of-line part of klog_printk(); call klog_printk() instead.
 * The record is formatted into this CPU's buffer with interrupts
 * disabled, so that nothing else on this CPU (NMIs aside) can use the
 * buffer before the handler has returned.
 *
 * Return: the record length when the handler accepted it, 0 when no
 * handler is registered, or the handler's negative error code.
 */
int __klog_printk(const char *fmt, ...)
{
	unsigned long flags;
	va_list args;
	char *buf;
	int len, ret;

	local_irq_save(flags);
	buf = this_cpu_ptr(&klog_printk_bufs)->buf;
	va_start(args, fmt);
	len = vscnprintf(buf, KLOG_PRINTK_BUF_SIZE, fmt, args);
	va_end(args);
	ret = __klog(buf, len);
	local_irq_restore(flags);

	return ret;
}
EXPORT_SYMBOL_GPL(__klog_printk);

/**
 * register_klog_handler() - install the klog handler
 * @ops: the handler; must stay valid until unregister_klog_handler()
 *
 * Only one handler can be registered at a time.  Must be called from
 * process context.
 *
 * Return: 0 on success, -EINVAL if @ops has no log callback, -EBUSY if a
 * handler is already registered.
 */
int register_klog_handler(const struct klog_handler_ops *ops)
{
	int ret = 0;

	if (!ops || !ops->log)
		return -EINVAL;

	mutex_lock(&klog_mutex);
	if (rcu_access_pointer(klog_handler)) {
		ret = -EBUSY;
	} else {
		rcu_assign_pointer(klog_handler, ops);
		static_branch_enable(&klog_key);
	}
	mutex_unlock(&klog_mutex);

	return ret;
}
EXPORT_SYMBOL_GPL(register_klog_handler);

/**
 * unregister_klog_handler() - remove the klog handler
 * @ops: the handler passed to register_klog_handler()
 *
 * On return no call of @ops->log is in progress or will be made, so the
 * caller may free whatever the handler uses.  Must be called from process
 * context; it sleeps.
 */
void unregister_klog_handler(const struct klog_handler_ops *ops)
{
	const struct klog_handler_ops *cur;

	mutex_lock(&klog_mutex);
	cur = rcu_dereference_protected(klog_handler,
					lockdep_is_held(&klog_mutex));
	if (WARN_ON_ONCE(cur != ops)) {
		mutex_unlock(&klog_mutex);
		return;
	}
	static_branch_disable(&klog_key);
	RCU_INIT_POINTER(klog_handler, NULL);
	mutex_unlock(&klog_mutex);

	synchronize_rcu();
}
EXPORT_SYMBOL_GPL(unregister_klog_handler);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klog: hand records to a single registered handler");
