/* Tensor-aware readahead for .safetensors files. The first read of such a
 * file parses its header (common/safetensors.c, the loader's parser) from
 * the block cache, so the daemon knows each tensor's byte range. A read
 * that lands in the data section then starts fetching the whole tensors it
 * touches, and the tensors after them, up to a window of bytes, in the
 * order readers go: the order of names (as safetensors.safe_open and
 * frameworks that iterate over sorted keys fault them in through mmap) or
 * the order of the file (a sequential read), whichever the last tensors
 * reached for the first time followed (until four were, the start of
 * both orders in turn). Tensors are fetched whatever order
 * the faults arrive in, queued in the readers' order; the engine joins
 * adjacent blocks into one request, so small tensors are batched.
 *
 * Thread-safe: each file's state has its own lock, held only to plan (never
 * while fetching or parsing). */
#ifndef WFS_FS_TENSOR_AHEAD_H
#define WFS_FS_TENSOR_AHEAD_H

#include <stdbool.h>
#include <stdint.h>

struct cache;
struct node;
struct tensor_ahead;

/* The JSON header of a file the daemon parses at most; bigger ones are
 * read with the plain readahead. */
#define TENSOR_AHEAD_MAX_HEADER (64ULL << 20)

/*
 * tensor_ahead_read() - start the fetches that a read of [@off, @end) of
 * file @n (@fsize bytes at @generation) calls for, keeping at most @max
 * bytes of tensors ahead of the read, topped up in steps of at least
 * @step bytes (a request's worth). Parses the header on
 * the first read of a .safetensors file (waiting for the blocks that hold
 * it, the second block already coming). Never waits for a fetch
 * otherwise.
 * @return true when the read started in a known tensor map's data section
 * and its readahead was done here; false when the caller's plain
 * readahead should run (not a safetensors file, an unparsable header, a
 * read starting in the header, so that one reading only the header, as
 * listing the tensors does, starts no window of tensors, or another
 * thread still parsing).
 */
bool tensor_ahead_read(struct cache *c, struct node *n, uint32_t generation,
		       uint64_t fsize, uint64_t off, uint64_t end, uint64_t max,
		       uint64_t step);

/* tensor_ahead_free() - free a file's state (tree.c, with the node). NULL
 * is fine. */
void tensor_ahead_free(struct tensor_ahead *ta);

#endif
