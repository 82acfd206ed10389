/*  mdl_metrics_process: the standard process_* gauges of Prometheus
    clients, for a Mandrill process's registry.

    mdl_metrics_add_process registers process_resident_memory_bytes,
    process_virtual_memory_bytes, process_open_fds, process_max_fds and
    process_start_time_seconds, and adds a collector that refreshes them
    from /proc (Linux) whenever the owner's loop calls mdl_metrics_collect,
    i.e. at most once per collect interval. (process_cpu_seconds_total is
    left out: registry counters are whole numbers.)

    Failure: when /proc cannot be read, the gauges keep their last values
    and nothing is logged (the collector runs every second). Cost per
    collect: four look-ups in the registry, O(families), a small read of
    /proc and a scan of /proc/self/fd, O(open descriptors): a few tens of
    microseconds, on the loop thread.
*/
#ifndef MDL_METRICS_PROCESS_H_INCLUDED
#define MDL_METRICS_PROCESS_H_INCLUDED

#include "mdl_metrics.h"

//  Register the gauges and the collector, and fill them once. Returns 0,
//  or -1 when a registration fails or the collector list is full.
//  Call once per registry (a second call adds a second collector).
//  The start time is -1 when /proc cannot tell it.
int mdl_metrics_add_process (mdl_metrics_t *metrics);

#endif
