/*  mdl_metrics_process: see mdl_metrics_process.h. */
#include "mdl_metrics_process.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char s_resident [] = "process_resident_memory_bytes";
static const char s_resident_help [] = "Resident memory size in bytes.";
static const char s_virtual [] = "process_virtual_memory_bytes";
static const char s_virtual_help [] = "Virtual memory size in bytes.";
static const char s_open [] = "process_open_fds";
static const char s_open_help [] = "Number of open file descriptors.";
static const char s_max [] = "process_max_fds";
static const char s_max_help [] = "Maximum number of open file descriptors.";

static void
s_collect (mdl_metrics_t *metrics, void *arg)
{
    (void) arg;
    //  The gauges are found again by name (get-or-create: a few string
    //  compares per collect), so the collector keeps no state of its own
    //  and any number of registries may have one
    mdl_gauge_t *resident = mdl_metrics_gauge (metrics, s_resident, s_resident_help, NULL);
    mdl_gauge_t *virtual = mdl_metrics_gauge (metrics, s_virtual, s_virtual_help, NULL);
    mdl_gauge_t *open_fds = mdl_metrics_gauge (metrics, s_open, s_open_help, NULL);
    mdl_gauge_t *max_fds = mdl_metrics_gauge (metrics, s_max, s_max_help, NULL);
    if (!resident || !virtual || !open_fds || !max_fds)
        return;
    long page = sysconf (_SC_PAGESIZE);
    FILE *file = fopen ("/proc/self/statm", "re");
    if (file) {
        unsigned long long size_pages, resident_pages;
        if (fscanf (file, "%llu %llu", &size_pages, &resident_pages) == 2 && page > 0) {
            mdl_gauge_set (virtual, (double) size_pages * (double) page);
            mdl_gauge_set (resident, (double) resident_pages * (double) page);
        }
        fclose (file);
    }
    DIR *dir = opendir ("/proc/self/fd");
    if (dir) {
        //  Less the one opendir holds
        long count = -1;
        struct dirent *entry;
        while ((entry = readdir (dir)))
            if (entry->d_name [0] != '.')
                count++;
        closedir (dir);
        mdl_gauge_set (open_fds, (double) (count > 0 ? count : 0));
    }
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) == 0)
        mdl_gauge_set (max_fds, limit.rlim_cur == RLIM_INFINITY ? -1.0 : (double) limit.rlim_cur);
}

//  Seconds since the epoch at which this process started: the boot time
//  from /proc/stat plus the start in clock ticks from /proc/self/stat.
//  Returns -1 when either cannot be read.
static double
s_start_time (void)
{
    unsigned long long boot = 0;
    char line [512];
    FILE *file = fopen ("/proc/stat", "re");
    if (!file)
        return -1;
    bool found = false;
    while (!found && fgets (line, sizeof line, file))
        found = sscanf (line, "btime %llu", &boot) == 1;
    fclose (file);
    if (!found)
        return -1;
    file = fopen ("/proc/self/stat", "re");
    if (!file)
        return -1;
    char stat [1024];
    size_t len = fread (stat, 1, sizeof stat - 1, file);
    fclose (file);
    stat [len] = 0;
    //  The command name may hold spaces and parentheses: fields are
    //  counted from the last ')'; starttime is field 22, the 20th after it
    char *p = strrchr (stat, ')');
    if (!p)
        return -1;
    unsigned long long start = 0;
    int field = 2;
    for (char *save = NULL, *token = strtok_r (p + 1, " ", &save); token;
         token = strtok_r (NULL, " ", &save))
        if (++field == 22) {
            start = strtoull (token, NULL, 10);
            break;
        }
    long ticks = sysconf (_SC_CLK_TCK);
    if (field != 22 || ticks <= 0)
        return -1;
    return (double) boot + (double) start / (double) ticks;
}

int
mdl_metrics_add_process (mdl_metrics_t *metrics)
{
    mdl_gauge_t *started = mdl_metrics_gauge (
        metrics, "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.", NULL);
    if (!started
    ||  !mdl_metrics_gauge (metrics, s_resident, s_resident_help, NULL)
    ||  !mdl_metrics_gauge (metrics, s_virtual, s_virtual_help, NULL)
    ||  !mdl_metrics_gauge (metrics, s_open, s_open_help, NULL)
    ||  !mdl_metrics_gauge (metrics, s_max, s_max_help, NULL))
        return -1;
    mdl_gauge_set (started, s_start_time ());
    if (mdl_metrics_add_collector (metrics, s_collect, NULL) != 0)
        return -1;
    s_collect (metrics, NULL);
    return 0;
}
