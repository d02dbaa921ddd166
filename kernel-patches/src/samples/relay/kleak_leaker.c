// SPDX-License-Identifier: GPL-2.0
/*
 * kleak_leaker - allocates on request, to test the kleak example
 *
 * Files in /sys/kernel/debug/kleak_leaker/:
 *   leak   writing "N SIZE" kmallocs N objects of SIZE bytes (16 or more)
 *          in kleak_leaker_leak() and keeps them: a leak, as a recording
 *          sees it (they are freed when the module is unloaded)
 *   churn  writing "N SIZE" kmallocs N objects of SIZE bytes in
 *          kleak_leaker_churn() and kfrees each one at once
 */

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#define KLEAK_LEAKER_MAX_SIZE	SZ_1M
#define KLEAK_LEAKER_MAX_N	100000

static LIST_HEAD(kleak_leaker_objects);
static DEFINE_MUTEX(kleak_leaker_mutex);	/* protects the list */
static struct dentry *kleak_leaker_dir;

/* Out of line, so that the objects' call site is this function. */
static noinline int kleak_leaker_leak(unsigned int n, size_t size)
{
	struct list_head *obj;

	for (; n; n--) {
		obj = kmalloc(size, GFP_KERNEL);
		if (!obj)
			return -ENOMEM;
		mutex_lock(&kleak_leaker_mutex);
		list_add_tail(obj, &kleak_leaker_objects);
		mutex_unlock(&kleak_leaker_mutex);
	}
	return 0;
}

static noinline int kleak_leaker_churn(unsigned int n, size_t size)
{
	void *obj;

	for (; n; n--) {
		obj = kmalloc(size, GFP_KERNEL);
		if (!obj)
			return -ENOMEM;
		kfree(obj);
	}
	return 0;
}

static ssize_t kleak_leaker_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos, bool leak)
{
	unsigned int n, size;
	char kbuf[32];
	int ret;

	if (count >= sizeof(kbuf))
		return -EINVAL;
	if (copy_from_user(kbuf, ubuf, count))
		return -EFAULT;
	kbuf[count] = '\0';
	if (sscanf(kbuf, "%u %u", &n, &size) != 2 ||
	    n > KLEAK_LEAKER_MAX_N || size < sizeof(struct list_head) ||
	    size > KLEAK_LEAKER_MAX_SIZE)
		return -EINVAL;

	ret = leak ? kleak_leaker_leak(n, size) : kleak_leaker_churn(n, size);
	return ret ? ret : count;
}

static ssize_t kleak_leaker_leak_write(struct file *file,
				       const char __user *ubuf, size_t count,
				       loff_t *ppos)
{
	return kleak_leaker_write(file, ubuf, count, ppos, true);
}

static ssize_t kleak_leaker_churn_write(struct file *file,
					const char __user *ubuf, size_t count,
					loff_t *ppos)
{
	return kleak_leaker_write(file, ubuf, count, ppos, false);
}

static const struct file_operations kleak_leaker_leak_fops = {
	.owner	= THIS_MODULE,
	.write	= kleak_leaker_leak_write,
	.llseek	= noop_llseek,
};

static const struct file_operations kleak_leaker_churn_fops = {
	.owner	= THIS_MODULE,
	.write	= kleak_leaker_churn_write,
	.llseek	= noop_llseek,
};

static int __init kleak_leaker_init(void)
{
	kleak_leaker_dir = debugfs_create_dir("kleak_leaker", NULL);
	debugfs_create_file("leak", 0200, kleak_leaker_dir, NULL,
			    &kleak_leaker_leak_fops);
	debugfs_create_file("churn", 0200, kleak_leaker_dir, NULL,
			    &kleak_leaker_churn_fops);
	return 0;
}
module_init(kleak_leaker_init);

static void __exit kleak_leaker_exit(void)
{
	struct list_head *obj, *next;

	debugfs_remove_recursive(kleak_leaker_dir);
	list_for_each_safe(obj, next, &kleak_leaker_objects)
		kfree(obj);
}
module_exit(kleak_leaker_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Allocates and leaks on request, to test the kleak example");
