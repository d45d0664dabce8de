/* A tiny check macro for the C unit tests: a failed check is reported
 * and counted, and the test goes on; main() returns check_failures != 0. */
#ifndef WFS_TESTS_CHECK_H
#define WFS_TESTS_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
			fprintf(stderr, __VA_ARGS__);                          \
			fputc('\n', stderr);                                   \
			failures++;                                            \
		}                                                              \
	} while (0)

#endif
