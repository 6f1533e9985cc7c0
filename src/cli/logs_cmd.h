/* logs_cmd.h: the control-socket command "logs" (what `ten logs` asks):
 * a query of tenement.db, or with "follow" the recent lines from memory
 * and then every new line as it comes, one JSON line each, until the
 * client leaves. Wired by serve (it needs both ctl and obs). */
#ifndef TEN_CLI_LOGS_CMD_H
#define TEN_CLI_LOGS_CMD_H

#include "ctl/ctl.h"
#include "obs/db.h"
#include "obs/logs.h"

void ten_logs_cmd_register(ten_ctl_t *ctl, ten_logs_t *logs, ten_db_t *db);

/* Prints one line as `ten logs` shows it. */
void ten_logs_cmd_print(int64_t ts_ms, const char *service, const char *instance, int level,
                        const char *message);

#endif
