/* Helpers the loader's unit tests share: fixtures, EXPECTED.json, checks. */
#ifndef WFS_TESTS_LOADER_TEST_UTIL_H
#define WFS_TESTS_LOADER_TEST_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <json-c/json.h>

#include "weightfs.h"

/* Every failed check also prints the loader's last error message. */
#define CHECK_NOTE() wfs_last_error()
#include "check.h"

/* WEIGHTFS_REQUIRE_FIXTURES=1: a missing fixture is a failure (CI). */
bool fixtures_required(void);

/* Whether the safetensors fixtures (EXPECTED.json) are there. */
bool fixtures_present(void);

/* The safetensors fixtures directory; exits 77 (skip) if absent, 1 if
 * fixtures_required(). */
const char *fixtures_dir(void);

/* EXPECTED.json, parsed (exits on failure). */
struct json_object *expected_load(void);

/* The safetensors dtype for a PyTorch dtype name ("bfloat16"), or -1. */
int dtype_from_torch(const char *name);

/*
 * check_tensors() - every tensor of @files (EXPECTED.json "files" keys,
 * NULL-terminated) is in loaded model @m with that dtype, shape and sha256,
 * and @m has no other tensors. Exits on a mismatch.
 */
void check_tensors(const struct wfs_model *m, struct json_object *expected,
		   const char *const *files);

#endif
