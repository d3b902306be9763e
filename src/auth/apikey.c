/*
 * apikey.c - API key generation, hashing and verification on libsodium.
 */
#include "auth/apikey.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char base62[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* Reads exactly len bytes from fd; returns 0 or -1. */
static int read_all(int fd, uint8_t *buf, size_t len)
{
        size_t got = 0;
        while (got < len) {
                ssize_t n = read(fd, buf + got, len - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                got += (size_t)n;
        }
        return 0;
}

int apikey_pepper_load(const char *dir, uint8_t pepper[APIKEY_PEPPER_LEN],
                       char *err, size_t errlen)
{
        char path[4096];
        int fd = -1;
        int res = -1;

        if (sodium_init() < 0) {
                snprintf(err, errlen, "libsodium failed to initialise");
                return -1;
        }
        snprintf(path, sizeof path, "%s/pepper", dir);

        /* The first start creates the pepper; O_EXCL makes two servers
         * starting at once agree on one file. */
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
                randombytes_buf(pepper, APIKEY_PEPPER_LEN);
                if (write(fd, pepper, APIKEY_PEPPER_LEN) != APIKEY_PEPPER_LEN ||
                    fsync(fd) != 0) {
                        snprintf(err, errlen, "cannot write %s: %s", path,
                                 strerror(errno));
                        unlink(path);
                        goto out;
                }
                log_info("auth", "Created a new key pepper in the data "
                                 "directory.");
                res = 0;
                goto out;
        }
        if (errno != EEXIST) {
                snprintf(err, errlen, "cannot create %s: %s", path,
                         strerror(errno));
                goto out;
        }

        /* An existing pepper must be exactly our size, and private. */
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || read_all(fd, pepper, APIKEY_PEPPER_LEN) != 0) {
                snprintf(err, errlen, "cannot read %s", path);
                goto out;
        }
        struct stat sb;
        if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) != 0)
                log_warn("auth", "The key pepper file is readable by others; "
                                 "chmod 600 it.");
        res = 0;
out:
        if (fd >= 0)
                close(fd);
        return res;
}

void apikey_generate(char key[APIKEY_LEN + 1])
{
        memcpy(key, APIKEY_TAG, APIKEY_TAG_LEN);
        for (int i = 0; i < APIKEY_RANDOM_LEN; i++)
                key[APIKEY_TAG_LEN + i] = base62[randombytes_uniform(62)];
        key[APIKEY_LEN] = '\0';
}

bool apikey_parse(const char *key, char prefix[APIKEY_PREFIX_LEN + 1])
{
        if (!key || strncmp(key, APIKEY_TAG, APIKEY_TAG_LEN) != 0)
                return false;
        for (int i = 0; i < APIKEY_RANDOM_LEN; i++) {
                char c = key[APIKEY_TAG_LEN + i];
                if (c == '\0' || !strchr(base62, c))
                        return false;
        }
        if (key[APIKEY_LEN] != '\0')
                return false;
        memcpy(prefix, key + APIKEY_TAG_LEN, APIKEY_PREFIX_LEN);
        prefix[APIKEY_PREFIX_LEN] = '\0';
        return true;
}

void apikey_hash(const uint8_t pepper[APIKEY_PEPPER_LEN], const char *key,
                 uint8_t out[32])
{
        crypto_generichash(out, 32, (const unsigned char *)key, strlen(key),
                           pepper, APIKEY_PEPPER_LEN);
}

bool apikey_verify(const uint8_t pepper[APIKEY_PEPPER_LEN], const char *key,
                   const uint8_t hash[32])
{
        uint8_t got[32];
        apikey_hash(pepper, key, got);
        bool ok = sodium_memcmp(got, hash, sizeof got) == 0;
        sodium_memzero(got, sizeof got);
        return ok;
}

enum store_status apikey_create(struct store *s,
                                const uint8_t pepper[APIKEY_PEPPER_LEN],
                                const char *collection, const char *name,
                                int rpm, const char *allowlist,
                                struct store_apikey *rec,
                                char key[APIKEY_LEN + 1])
{
        enum store_status st = STORE_CONFLICT;

        /* A prefix already taken by another key is drawn again. */
        memset(rec, 0, sizeof *rec);
        snprintf(rec->collection_id, sizeof rec->collection_id, "%s",
                 collection);
        rec->rpm = rpm;
        rec->name = name ? strdup(name) : NULL;
        rec->allowlist = strdup(allowlist ? allowlist : "[]");
        if ((name && !rec->name) || !rec->allowlist) {
                store_apikey_clear(rec);
                return STORE_ERROR;
        }
        for (int tries = 0; tries < 5 && st == STORE_CONFLICT; tries++) {
                apikey_generate(key);
                apikey_parse(key, rec->prefix);
                apikey_hash(pepper, key, rec->hash);
                st = store_apikey_insert(s, rec);
        }
        if (st != STORE_OK) {
                sodium_memzero(key, APIKEY_LEN + 1);
                store_apikey_clear(rec);
        }
        return st;
}
