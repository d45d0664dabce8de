/* The one assertion helper of the C unit tests. A failed check prints
 * FILE:LINE, the expression and an optional printf-style message, and ends
 * the test at once with exit status 1: nothing after it runs on a state it
 * did not expect. Unlike assert(), a check is never compiled out (NDEBUG,
 * -Db_ndebug=true), so a broken test fails in every build.
 *
 *   CHECK(cond);                      CHECK(cond, "fmt", args...);
 *   CHECK_EQ(a, b);                   integers, both values printed
 *   CHECK_STREQ(a, b);                strings (NULL is a value)
 *
 * A test file may define CHECK_NOTE() (before including this) to a
 * function returning a string printed with every failure (e.g. the
 * library's last error message), or NULL.
 *
 * There is no failure count: a test that returns from main() passed, and
 * a test that cannot run here calls CHECK_SKIP(), which exits 77 (meson's
 * "skipped") with the reason, so a skip is never reported as a pass. */
#ifndef WFS_TESTS_CHECK_H
#define WFS_TESTS_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CHECK_NOTE
#define CHECK_NOTE() ((const char *)NULL)
#endif

__attribute__((noreturn, format(printf, 5, 6), unused)) static void
check_fail(const char *file, int line, const char *expr, const char *note,
	   const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL %s:%d: CHECK(%s)", file, line, expr);
	if (fmt[0] && fmt[1]) { /* " " alone: no message */
		fputc(':', stderr);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
	}
	if (note && *note)
		fprintf(stderr, " [%s]", note);
	fputc('\n', stderr);
	fflush(NULL);
	exit(1);
}

/* CHECK_SKIP() - this test cannot run here: say why, exit 77. */
__attribute__((noreturn, format(printf, 1, 2), unused)) static void
CHECK_SKIP(const char *fmt, ...)
{
	va_list ap;

	fputs("SKIP: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(NULL);
	exit(77);
}

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			check_fail(__FILE__, __LINE__, #cond, CHECK_NOTE(),    \
				   " " __VA_ARGS__);                           \
	} while (0)

#define CHECK_EQ(a, b)                                                         \
	do {                                                                   \
		long long check_a_ = (long long)(a);                           \
		long long check_b_ = (long long)(b);                           \
		if (check_a_ != check_b_)                                      \
			check_fail(__FILE__, __LINE__, #a " == " #b,           \
				   CHECK_NOTE(), " %lld != %lld", check_a_,    \
				   check_b_);                                  \
	} while (0)

#define CHECK_STREQ(a, b)                                                      \
	do {                                                                   \
		const char *check_a_ = (a);                                    \
		const char *check_b_ = (b);                                    \
		if (check_a_ != check_b_ &&                                    \
		    (!check_a_ || !check_b_ || strcmp(check_a_, check_b_)))    \
			check_fail(__FILE__, __LINE__, #a " == " #b,           \
				   CHECK_NOTE(), " \"%s\" != \"%s\"",          \
				   check_a_ ? check_a_ : "(null)",             \
				   check_b_ ? check_b_ : "(null)");            \
	} while (0)

#endif
