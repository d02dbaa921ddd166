// SPDX-License-Identifier: GPL-2.0
/*
 * relay_flight - the overwrite example: a flight recorder that logs all
 * the time into small overwrite-mode buffers, keeping only the newest
 * records, until something happens; the buffers are then dumped at
 * leisure, for instance with "relay-reader snapshot"
 *
 * From module load on, every online CPU writes a burst of records
 * "relay_flight cpu=<cpu> seq=<seq> jiffies=<jiffies>\n" from a timer
 * every period_ms, seq counting from 0 per CPU, into the overwrite-mode
 * relay_app channel /sys/kernel/debug/relay_flight/cpu0 .. cpuN-1.
 * Nobody reads while it runs: the writer keeps overwriting the oldest
 * sub-buffer.
 *
 * Writing a message to /sys/kernel/debug/relay_flight/trigger stops the
 * recorder on every CPU, then logs "relay_flight cpu=<cpu> seq=<seq>
 * trigger: <message>\n" on the writer's CPU: the newest record of all.
 * Reading "trigger" gives 1 once the recorder stopped.  What the buffers
 * hold then is the last n_subbufs - 1 full sub-buffers of every CPU plus
 * the partly filled one, each CPU's records without a gap.
 */

#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/smp.h>
#include <linux/string.h>
#include <linux/timer.h>
#include <linux/uaccess.h>

#include "relay_app.h"

static ulong subbuf_size = 4096;
module_param(subbuf_size, ulong, 0444);
MODULE_PARM_DESC(subbuf_size, "Sub-buffer size in bytes (default 4096)");

static ulong n_subbufs = 4;
module_param(n_subbufs, ulong, 0444);
MODULE_PARM_DESC(n_subbufs, "Sub-buffers per CPU buffer (default 4)");

static uint period_ms = 10;
module_param(period_ms, uint, 0444);
MODULE_PARM_DESC(period_ms, "Milliseconds between bursts (default 10)");

static uint burst = 16;
module_param(burst, uint, 0444);
MODULE_PARM_DESC(burst, "Records per CPU and burst (default 16)");

#define RELAY_FLIGHT_MAX_MSG	128

struct relay_flight_cpu {
	struct timer_list timer;
	unsigned int cpu;
	u64 seq;
};

static DEFINE_PER_CPU(struct relay_flight_cpu, relay_flight_cpus);
static DEFINE_MUTEX(relay_flight_mutex);	/* serialises triggers */
static bool relay_flight_stopped;
static struct relay_app *relay_flight_app;
static struct dentry *relay_flight_trigger;

/* Log one record on this CPU; interrupts are disabled or ticks stopped. */
static void relay_flight_log(struct relay_flight_cpu *c, const char *what)
{
	char rec[RELAY_FLIGHT_MAX_MSG + 64];
	int len;

	len = scnprintf(rec, sizeof(rec), "relay_flight cpu=%u seq=%llu %s\n",
			c->cpu, c->seq++, what);
	relay_app_write(relay_flight_app, rec, len);
}

static void relay_flight_tick(struct timer_list *t)
{
	struct relay_flight_cpu *c = container_of(t, struct relay_flight_cpu,
						  timer);
	char what[32];
	unsigned int i;

	if (READ_ONCE(relay_flight_stopped))
		return;
	snprintf(what, sizeof(what), "jiffies=%lu", jiffies);
	for (i = 0; i < burst; i++)
		relay_flight_log(c, what);
	/* A pinned timer stays on this CPU. */
	mod_timer(t, jiffies + max(msecs_to_jiffies(period_ms), 1UL));
}

static void relay_flight_stop(void)
{
	unsigned int cpu;

	WRITE_ONCE(relay_flight_stopped, true);
	for_each_possible_cpu(cpu)
		timer_delete_sync(&per_cpu_ptr(&relay_flight_cpus, cpu)->timer);
}

static ssize_t relay_flight_trigger_write(struct file *file,
					  const char __user *ubuf,
					  size_t count, loff_t *ppos)
{
	char msg[RELAY_FLIGHT_MAX_MSG], what[RELAY_FLIGHT_MAX_MSG + 16];
	size_t len = min(count, sizeof(msg) - 1);
	unsigned int cpu;

	if (copy_from_user(msg, ubuf, len))
		return -EFAULT;
	msg[len] = '\0';
	snprintf(what, sizeof(what), "trigger: %s", strim(msg));

	mutex_lock(&relay_flight_mutex);
	relay_flight_stop();
	/* No tick runs any more: this CPU's counter is ours. */
	cpu = get_cpu();
	relay_flight_log(per_cpu_ptr(&relay_flight_cpus, cpu), what);
	put_cpu();
	mutex_unlock(&relay_flight_mutex);

	return count;
}

static ssize_t relay_flight_trigger_read(struct file *file, char __user *ubuf,
					 size_t count, loff_t *ppos)
{
	char val[3] = "0\n";

	if (READ_ONCE(relay_flight_stopped))
		val[0] = '1';
	return simple_read_from_buffer(ubuf, count, ppos, val, 2);
}

static const struct file_operations relay_flight_trigger_fops = {
	.owner	= THIS_MODULE,
	.read	= relay_flight_trigger_read,
	.write	= relay_flight_trigger_write,
	.llseek	= default_llseek,
};

static int __init relay_flight_init(void)
{
	struct relay_app_params params = {
		.subbuf_size	= subbuf_size,
		.n_subbufs	= n_subbufs,
		.overwrite	= true,
	};
	struct relay_flight_cpu *c;
	unsigned int cpu;

	relay_flight_app = relay_app_create("relay_flight", NULL, &params);
	if (IS_ERR(relay_flight_app))
		return PTR_ERR(relay_flight_app);
	relay_flight_trigger =
		debugfs_create_file("trigger", 0600,
				    relay_app_dir(relay_flight_app), NULL,
				    &relay_flight_trigger_fops);

	for_each_possible_cpu(cpu) {
		c = per_cpu_ptr(&relay_flight_cpus, cpu);
		c->cpu = cpu;
		timer_setup(&c->timer, relay_flight_tick, TIMER_PINNED);
	}
	cpus_read_lock();
	for_each_online_cpu(cpu) {
		c = per_cpu_ptr(&relay_flight_cpus, cpu);
		c->timer.expires = jiffies + 1;
		add_timer_on(&c->timer, cpu);
	}
	cpus_read_unlock();
	return 0;
}
module_init(relay_flight_init);

static void __exit relay_flight_exit(void)
{
	debugfs_remove(relay_flight_trigger);
	relay_flight_stop();
	relay_app_destroy(relay_flight_app);
}
module_exit(relay_flight_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("relay overwrite example: a flight recorder");
