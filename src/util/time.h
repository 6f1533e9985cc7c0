/* time.h: clocks. Monotonic for deadlines and durations, wall for display. */
#ifndef TEN_UTIL_TIME_H
#define TEN_UTIL_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC: for timeouts, uptimes, durations. */
uint64_t ten_now_ms(void);
/* Nanoseconds on CLOCK_MONOTONIC: for latency histograms. */
uint64_t ten_now_ns(void);
/* Milliseconds since the Unix epoch (CLOCK_REALTIME): for timestamps people read. */
int64_t ten_wall_ms(void);
/* Formats wall-clock ms as RFC 3339 UTC with milliseconds into out (>= 25 bytes). */
void ten_format_rfc3339(int64_t wall_ms, char *out, size_t outlen);

#endif
