/* commands.h: the control-socket commands that drive the hypervisor:
 * ps, spawn, stop, restart, weight, config.
 *
 * spawn, stop and restart answer when the instance has reached the state
 * that was asked for (ready, or stopped) or has failed on the way, so the
 * CLI's exit status tells the truth; `"wait": false` answers at once.
 */
#ifndef TEN_CTL_COMMANDS_H
#define TEN_CTL_COMMANDS_H

#include "ctl/ctl.h"
#include "hv/hv.h"

typedef struct ten_ctl_commands ten_ctl_commands_t;

ten_ctl_commands_t *ten_ctl_commands_new(ten_ctl_t *ctl, ten_hv_t *hv);
/* Replies to every wait still pending (the server is going away). */
void ten_ctl_commands_cancel(ten_ctl_commands_t *cmds);
void ten_ctl_commands_free(ten_ctl_commands_t *cmds);

#endif
