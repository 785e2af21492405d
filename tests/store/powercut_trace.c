/* LD_PRELOAD shim for tests/store/test_store_powercut.py: records every change a process makes to the files
 * under one directory (creations, writes, syncs, renames, removals), in order, so the test can rebuild what a
 * power cut at any point would have left on disk. Nothing is changed: each call goes on to libc's.
 *
 * BOROUGH_TRACE_DIR: the directory whose files are traced; BOROUGH_TRACE_OUT: the trace file.
 * Record: kind (1 byte), path length (4), path, data length (4), data, offset (8), little-endian.
 * Kinds: 'C' open that creates or truncates, 'W' write at offset, 'S' fsync/fdatasync of a file or directory,
 * 'R' rename (data = the new path), 'U' unlink.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_FDS 65536

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *paths[MAX_FDS];
static int out = -1;
static const char *dir;
static size_t dir_len;

static void setup(void) {
    if (dir != NULL) return;
    const char *d = getenv("BOROUGH_TRACE_DIR");
    const char *o = getenv("BOROUGH_TRACE_OUT");
    if (d == NULL || o == NULL) { dir = ""; dir_len = 0; return; }
    out = (int)syscall(SYS_openat, AT_FDCWD, o, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    dir_len = strlen(d);
    dir = d;
}

static int traced(const char *path) {
    setup();
    return out >= 0 && path != NULL && dir_len > 0 && strncmp(path, dir, dir_len) == 0;
}

static void put_all(const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        long w = syscall(SYS_write, out, p, n);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void record(char kind, const char *path, const void *data, uint32_t len, int64_t offset) {
    uint32_t plen = (uint32_t)strlen(path);
    size_t total = 1 + 4 + plen + 4 + len + 8;
    char *buf = malloc(total);
    if (buf == NULL) return;
    char *p = buf;
    *p++ = kind;
    memcpy(p, &plen, 4); p += 4;
    memcpy(p, path, plen); p += plen;
    memcpy(p, &len, 4); p += 4;
    if (len) { memcpy(p, data, len); p += len; }
    memcpy(p, &offset, 8);
    put_all(buf, total);
    free(buf);
}

static void remember(int fd, const char *path, int flags) {
    if (fd < 0 || fd >= MAX_FDS || !traced(path)) return;
    pthread_mutex_lock(&lock);
    free(paths[fd]);
    paths[fd] = strdup(path);
    if (flags & (O_CREAT | O_TRUNC)) record('C', path, NULL, 0, (flags & O_TRUNC) ? 1 : 0);
    pthread_mutex_unlock(&lock);
}

/* open, open64, openat and openat64: libc's, then the fd remembered when its path is traced (openat only for an
 * absolute path, which is what LevelDB and Python pass). */
#define TRACED_OPEN(name, PARAMS, ARGS, PATH_OK)                                     \
    int name(PARAMS, int flags, ...) {                                               \
        mode_t mode = 0;                                                             \
        if (flags & (O_CREAT | O_TMPFILE)) {                                         \
            va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap);  \
        }                                                                            \
        static int (*real)(PARAMS, int, ...);                                        \
        if (!real) real = dlsym(RTLD_NEXT, #name);                                   \
        int fd = real(ARGS, flags, mode);                                            \
        if (PATH_OK) remember(fd, path, flags);                                      \
        return fd;                                                                   \
    }

#define COMMA ,
TRACED_OPEN(open, const char *path, path, 1)
TRACED_OPEN(open64, const char *path, path, 1)
TRACED_OPEN(openat, int dirfd COMMA const char *path, dirfd COMMA path, path[0] == '/')
TRACED_OPEN(openat64, int dirfd COMMA const char *path, dirfd COMMA path, path[0] == '/')

ssize_t write(int fd, const void *buf, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    if (fd < 0 || fd >= MAX_FDS || paths[fd] == NULL) return real(fd, buf, n);
    pthread_mutex_lock(&lock);
    off_t at = lseek(fd, 0, SEEK_CUR);
    ssize_t done = real(fd, buf, n);
    if (done > 0 && paths[fd] != NULL) record('W', paths[fd], buf, (uint32_t)done, (int64_t)at);
    pthread_mutex_unlock(&lock);
    return done;
}

static int synced(int fd, int result) {
    if (result == 0 && fd >= 0 && fd < MAX_FDS && paths[fd] != NULL) {
        pthread_mutex_lock(&lock);
        if (paths[fd] != NULL) record('S', paths[fd], NULL, 0, 0);
        pthread_mutex_unlock(&lock);
    }
    return result;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    return synced(fd, real(fd));
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    return synced(fd, real(fd));
}

int close(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "close");
    if (fd >= 0 && fd < MAX_FDS && paths[fd] != NULL) {
        pthread_mutex_lock(&lock);
        free(paths[fd]);
        paths[fd] = NULL;
        pthread_mutex_unlock(&lock);
    }
    return real(fd);
}

int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    if (!real) real = dlsym(RTLD_NEXT, "rename");
    int result = real(from, to);
    if (result == 0 && (traced(from) || traced(to))) {
        pthread_mutex_lock(&lock);
        record('R', from, to, (uint32_t)strlen(to), 0);
        pthread_mutex_unlock(&lock);
    }
    return result;
}

int unlink(const char *path) {
    static int (*real)(const char *);
    if (!real) real = dlsym(RTLD_NEXT, "unlink");
    int result = real(path);
    if (result == 0 && traced(path)) {
        pthread_mutex_lock(&lock);
        record('U', path, NULL, 0, 0);
        pthread_mutex_unlock(&lock);
    }
    return result;
}
