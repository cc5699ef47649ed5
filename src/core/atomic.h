/* Atomic file replacement, shared by the model-file writer and the PNG writer (private).
 *
 * cnf_atomic_open creates a temporary file "<path>.tmp.XXXXXX" in the target's directory;
 * the caller writes to af->fp; cnf_atomic_commit flushes, fsyncs, closes and rename()s it over
 * the target (then fsyncs the directory), so a reader sees either the old file or the new one,
 * never a mix. Any failure, in the writes or in the commit, removes the temporary file and leaves
 * the previous target untouched. The new file gets the previous target's permission bits, or
 * 0644 if there was none. */
#ifndef CNF_ATOMIC_H
#define CNF_ATOMIC_H

#include <stdio.h>

typedef struct cnf_atomic_file {
    FILE *fp;
    char *tmp;        /* temporary path (owned) */
    const char *path; /* the target, borrowed from the caller */
} cnf_atomic_file;

/* CNF_OK, or CNF_EIO (detail names path and errno) / CNF_ENOMEM with *af cleared. */
int cnf_atomic_open(cnf_atomic_file *af, const char *path);
/* Publish the file. CNF_EIO if any write failed or flush/fsync/close/rename fails (the temporary
 * file is then removed). Releases af in every case. */
int cnf_atomic_commit(cnf_atomic_file *af);
/* Discard the temporary file; keeps the current error detail. NULL fp is fine. */
void cnf_atomic_abort(cnf_atomic_file *af);

#endif
