/* Prometheus text exposition (format 0.0.4) of weightfs's stats JSON, for
 * `weightfs-ctl stats --prometheus` and node_exporter's textfile collector. */
#ifndef WFS_TOOLS_CTL_PROM_H
#define WFS_TOOLS_CTL_PROM_H

#include <stdio.h>

/*
 * prom_write() - write the metrics of @n mounts to @out: for each key of
 * the stats JSON objects @jsons (one per mountpoint @mnts[i]), one metric
 * family weightfs_KEY with one sample per mount, labelled
 * mountpoint="...". Keys are generic: a number is a counter (KEY_total)
 * unless the table of gauges in ctl_prom.c says otherwise; an object with
 * "le", "counts", "sum" and "count" is a histogram. So counters the daemon
 * adds later appear without a change here.
 * @return 0, or -EINVAL when a JSON object does not parse (said on stderr).
 */
int prom_write(FILE *out, const char *const *jsons, const char *const *mnts,
	       int n);

#endif
