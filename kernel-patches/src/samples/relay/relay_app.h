/* SPDX-License-Identifier: GPL-2.0 */
/*
 * relay_app - a relay channel with relay-apps control files and the
 * <uapi/linux/relay.h> ioctls on its buffer files
 */
#ifndef _SAMPLES_RELAY_APP_H
#define _SAMPLES_RELAY_APP_H

#include <linux/types.h>

struct dentry;
struct relay_app;

/**
 * struct relay_app_params - geometry and mode of a relay_app channel
 * @subbuf_size: bytes per sub-buffer, including the 4-byte header that
 *	holds the sub-buffer's padding
 * @n_subbufs: sub-buffers per buffer
 * @overwrite: overwrite unconsumed sub-buffers when the buffer is full
 *	(flight recorder) instead of dropping new writes
 * @global: one buffer shared by all CPUs instead of one buffer per CPU
 */
struct relay_app_params {
	size_t subbuf_size;
	size_t n_subbufs;
	bool overwrite;
	bool global;
};

struct relay_app *relay_app_create(const char *dirname, struct dentry *parent,
				   const struct relay_app_params *params);
int relay_app_write(struct relay_app *app, const void *data, size_t len);
void relay_app_destroy(struct relay_app *app);

#endif /* _SAMPLES_RELAY_APP_H */
