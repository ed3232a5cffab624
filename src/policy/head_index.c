#include "policy/head_index.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "core/read_file.h"

#define HEAD_INDEX_MAX_BYTES ((size_t)1 << 20)

int head_index_find(const char *dir, const char *fingerprint, char *path_out, size_t cap, rc_err *err) {
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/%s", dir, HEAD_INDEX_FILE) >= (int)sizeof(path))
        return rc_fail(err, "%s: head-scores directory path too long", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        if (errno == ENOENT) return 0;  // a directory without an index ships nothing
        return rc_fail(err, "%s: %s", path, strerror(errno));
    }
    fclose(probe);
    char *text = NULL;
    size_t len = 0;
    if (read_file_bounded(path, HEAD_INDEX_MAX_BYTES, "head-scores index", &text, &len, err)) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    int rc = 0;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    if (!cJSON_IsObject(root) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, HEAD_INDEX_FORMAT) ||
        !cJSON_IsArray(models)) {
        rc = rc_fail(err, "%s: not a head-scores index (expected {\"format\": \"%s\", \"models\": [...]})", path,
                     HEAD_INDEX_FORMAT);
        goto done;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, models) {
        const cJSON *fp = cJSON_GetObjectItemCaseSensitive(m, "fingerprint");
        const cJSON *scores = cJSON_GetObjectItemCaseSensitive(m, "scores");
        if (!cJSON_IsString(fp) || !cJSON_IsString(scores) || !scores->valuestring[0]) {
            rc = rc_fail(err, "%s: every entry of \"models\" needs string members \"fingerprint\" and \"scores\"", path);
            goto done;
        }
        if (strcmp(fp->valuestring, fingerprint)) continue;
        if (snprintf(path_out, cap, "%s/%s", dir, scores->valuestring) >= (int)cap) {
            rc = rc_fail(err, "%s: the path of %s is too long", path, scores->valuestring);
            goto done;
        }
        rc = 1;
        goto done;
    }
done:
    cJSON_Delete(root);
    return rc;
}
