/* Temporary file + fsync + rename(): POSIX guarantees rename() replaces the target atomically
 * within one file system, which is why the temporary file lives in the target's directory. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "internal.h"

int cnf_atomic_open(cnf_atomic_file *af, const char *path)
{
    memset(af, 0, sizeof *af);
    if (!path || !*path)
        return cnf_fail(CNF_EINVAL, "empty output path");
    size_t len = strlen(path);
    af->tmp = malloc(len + sizeof ".tmp.XXXXXX");
    if (!af->tmp)
        return cnf_fail(CNF_ENOMEM, "%s: temporary name", path);
    memcpy(af->tmp, path, len);
    memcpy(af->tmp + len, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    int fd = mkstemp(af->tmp);
    if (fd < 0) {
        int e = errno;
        free(af->tmp);
        af->tmp = NULL;
        return cnf_fail(CNF_EIO, "%s: cannot create a temporary file in its directory: %s", path,
                        strerror(e));
    }
    struct stat st;
    mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644;
    if (fchmod(fd, mode) != 0 || !(af->fp = fdopen(fd, "wb"))) {
        int e = errno;
        close(fd);
        unlink(af->tmp);
        free(af->tmp);
        af->tmp = NULL;
        return cnf_fail(CNF_EIO, "%s: cannot open the temporary file: %s", path, strerror(e));
    }
    af->path = path;
    return CNF_OK;
}

void cnf_atomic_abort(cnf_atomic_file *af)
{
    if (af->fp)
        fclose(af->fp);
    if (af->tmp) {
        unlink(af->tmp);
        free(af->tmp);
    }
    memset(af, 0, sizeof *af);
}

/* fsync the directory holding path so the rename itself survives a crash; best effort. */
static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int cnf_atomic_commit(cnf_atomic_file *af)
{
    const char *what = NULL;
    if (ferror(af->fp))
        what = "write";
    else if (fflush(af->fp) != 0)
        what = "flush";
    else if (fsync(fileno(af->fp)) != 0)
        what = "fsync";
    int e = errno;
    int closed = fclose(af->fp);
    af->fp = NULL;
    if (!what && closed != 0)
        what = "close", e = errno;
    if (!what && rename(af->tmp, af->path) != 0)
        what = "rename", e = errno;
    if (what) {
        int rc = cnf_fail(CNF_EIO, "%s: %s failed: %s (previous file left unchanged)", af->path,
                          what, strerror(e ? e : EIO));
        cnf_atomic_abort(af);
        return rc;
    }
    sync_dir(af->path);
    free(af->tmp);
    memset(af, 0, sizeof *af);
    return CNF_OK;
}
