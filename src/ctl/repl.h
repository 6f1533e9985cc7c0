/* repl.h: `ten repl`, evaluated inside the server.
 *
 * Registers the control-socket command "eval" ({"code": "..."}): the code
 * runs in one Lua state kept for the server's life (so a variable set in
 * one line is there in the next), with the `ten` table of
 * lua/tenement/repl.lua bound to the hypervisor, in the same sandbox as
 * tenement.lua (what it offers: lua/tenement/repl.lua). It runs on the
 * loop thread, each chunk under tenL_repl_limit and the session under the
 * state's memory limit, so a runaway loop, a pcall that catches its own
 * timeout or os.exit end the chunk, not the server. Replies {"output":
 * printed text, "result": formatted values} or {"incomplete": true} for a
 * chunk that needs more lines.
 */
#ifndef TEN_CTL_REPL_H
#define TEN_CTL_REPL_H

#include "ctl/ctl.h"
#include "hv/hv.h"

/* Reloads tenement.lua the way SIGHUP does; fills summary or err. */
typedef int (*ten_repl_reload_fn)(void *ctx, ten_buf_t *summary, ten_err_t *err);

typedef struct ten_repl ten_repl_t;

ten_repl_t *ten_repl_new(ten_ctl_t *ctl, ten_hv_t *hv, ten_repl_reload_fn reload, void *ctx);
void ten_repl_free(ten_repl_t *repl);

#endif
