/* proc.h: the process of an instance, as the state machine sees it.
 *
 * hv.c decides when an instance starts and stops; this interface does it:
 * starts the next process (socket or port, environment, output, spawn),
 * watches it with a pidfd on the loop, signals it, and reports its exit
 * back with ten__hv_exited(). The isolation levels and cgroups of issue 9
 * slot in here, behind these same calls, so the state machine never learns
 * how a process was started or how its tree is killed.
 *
 * Ownership: an instance owns at most one ten_proc_t (inst->proc). The
 * pidfd watch is closed asynchronously, so the record is its own
 * allocation, freed in its close callback. Loop thread only.
 */
#ifndef TEN_HV_PROC_H
#define TEN_HV_PROC_H

#include "hv/hv.h"

/* Starts the instance's next process and watches it: inst->proc and
 * inst->pid are set on success. 0, or a negative UV_E* code with err
 * naming the instance and what failed (and then no process runs). */
int ten__proc_start(ten_instance_t *inst, ten_err_t *err);

/* Sends sig to the instance's process tree; nothing if it has no process. */
void ten__proc_signal(ten_instance_t *inst, int sig);

/* hv.c: the process of `inst` was reaped (inst->proc and inst->pid are
 * already cleared); wstatus as from waitpid. */
void ten__hv_exited(ten_instance_t *inst, int wstatus);

#endif
