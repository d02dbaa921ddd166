/* SPDX-License-Identifier: GPL-2.0 */
/*
 * relay_app - a relay channel with relay-apps control files and the
 * <uapi/linux/relay.h> ioctls on its buffer files
 */
#ifndef _SAMPLES_RELAY_APP_H
#define _SAMPLES_RELAY_APP_H

#include <linux/types.h>

struct dentry;
struct kvec;
struct relay_app;

/**
 * struct relay_app_params - geometry and mode of a relay_app channel
 * @subbuf_size: bytes per sub-buffer, including the padding word that
 *	holds the sub-buffer's padding
 * @n_subbufs: sub-buffers per buffer
 * @overwrite: overwrite unconsumed sub-buffers when the buffer is full
 *	(flight recorder) instead of dropping new writes
 * @global: one buffer shared by all CPUs instead of one buffer per CPU
 * @raw: no padding word: sub-buffers hold records only (for read(2)
 *	readers; mmap readers need the ioctls to learn the padding)
 * @padding_size_t: the padding word is a size_t, as some copies of
 *	relay-apps' klog module write it, instead of the unsigned int of
 *	relay.rst's example; not with @raw
 * @committed: every sub-buffer's data starts with a u32 counting the
 *	bytes of records after it whose writers are done, for records
 *	filled in place (relay_app_reserve()); needs a multiple of 4 as
 *	@subbuf_size and no @overwrite
 */
struct relay_app_params {
	size_t subbuf_size;
	size_t n_subbufs;
	bool overwrite;
	bool global;
	bool raw;
	bool padding_size_t;
	bool committed;
};

/**
 * struct relay_app_slot - room reserved with relay_app_reserve()
 * @data: the reserved bytes, for the caller to fill
 * @len: their number
 * @committed: the committed count of the sub-buffer holding them
 * @srcu_idx: keeps the buffer alive until relay_app_commit()
 */
struct relay_app_slot {
	void *data;
	size_t len;
	atomic_t *committed;
	int srcu_idx;
};

struct relay_app *relay_app_create(const char *dirname, struct dentry *parent,
				   const struct relay_app_params *params);
int relay_app_write(struct relay_app *app, const void *data, size_t len);
int relay_app_writev(struct relay_app *app, const struct kvec *vec,
		     unsigned int nr);
int relay_app_reserve(struct relay_app *app, size_t len,
		      struct relay_app_slot *slot);
void relay_app_commit(struct relay_app *app, struct relay_app_slot *slot);
struct dentry *relay_app_dir(struct relay_app *app);
void relay_app_destroy(struct relay_app *app);

#endif /* _SAMPLES_RELAY_APP_H */
