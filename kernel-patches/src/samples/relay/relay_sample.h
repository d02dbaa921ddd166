/* SPDX-License-Identifier: GPL-2.0 */
/*
 * relay_sample - a helper the relay sample modules share: running a work
 * item on every online CPU
 */
#ifndef _SAMPLES_RELAY_SAMPLE_H
#define _SAMPLES_RELAY_SAMPLE_H

#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/percpu.h>
#include <linux/workqueue.h>

/**
 * struct relay_sample_work - a CPU's work item in a per-CPU variable
 * @work: the work item
 * @cpu: the CPU it was queued on by relay_sample_run_on_cpus()
 */
struct relay_sample_work {
	struct work_struct work;
	unsigned int cpu;
};

/**
 * relay_sample_run_on_cpus() - run a per-CPU work item on every online CPU
 * @works: every CPU's work item (a per-CPU variable, or a member of one)
 *
 * Queues the work item of every online CPU on that CPU, then waits until
 * all of them are done.  CPUs neither come nor go meanwhile, so that each
 * runs on its own CPU.  The caller serialises runs; what it stores before
 * the call, the work items see.
 */
static inline void
relay_sample_run_on_cpus(struct relay_sample_work __percpu *works)
{
	struct relay_sample_work *w;
	unsigned int cpu;

	cpus_read_lock();
	for_each_online_cpu(cpu) {
		w = per_cpu_ptr(works, cpu);
		w->cpu = cpu;
		schedule_work_on(cpu, &w->work);
	}
	for_each_online_cpu(cpu)
		flush_work(&per_cpu_ptr(works, cpu)->work);
	cpus_read_unlock();
}

#endif /* _SAMPLES_RELAY_SAMPLE_H */
