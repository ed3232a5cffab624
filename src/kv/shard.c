#include "kv/shard.h"

// Boundaries of chunk i of n_chunks over [0, n): as even as possible, the
// first n % n_chunks chunks one longer.
static int64_t chunk_start(int64_t n, int64_t n_chunks, int64_t i) {
    int64_t base = n / n_chunks, extra = n % n_chunks;
    return i * base + (i < extra ? i : extra);
}

shard_ranges shard_prompt_ranges(const shard_plan *p, int rank) {
    shard_ranges r = {0};
    const int64_t N = p->n_ranks;
    if (!p->zigzag) {
        r.n = 1;
        r.start[0] = chunk_start(p->n_prompt, N, rank);
        r.end[0] = chunk_start(p->n_prompt, N, rank + 1);
        return r;
    }
    // Chunks rank and 2N-1-rank: an early (cheap) and a late (expensive) one.
    int64_t a = rank, b = 2 * N - 1 - rank;
    r.n = 2;
    r.start[0] = chunk_start(p->n_prompt, 2 * N, a);
    r.end[0] = chunk_start(p->n_prompt, 2 * N, a + 1);
    r.start[1] = chunk_start(p->n_prompt, 2 * N, b);
    r.end[1] = chunk_start(p->n_prompt, 2 * N, b + 1);
    return r;
}

int64_t shard_prompt_count(const shard_plan *p, int rank) {
    shard_ranges r = shard_prompt_ranges(p, rank);
    int64_t n = 0;
    for (int i = 0; i < r.n; i++) n += r.end[i] - r.start[i];
    return n;
}

int shard_owner(const shard_plan *p, int64_t pos) {
    if (pos >= p->n_prompt) return (int)(((pos - p->n_prompt) / SHARD_GEN_BLOCK) % p->n_ranks);
    for (int rank = 0; rank < p->n_ranks; rank++) {
        shard_ranges r = shard_prompt_ranges(p, rank);
        for (int i = 0; i < r.n; i++)
            if (pos >= r.start[i] && pos < r.end[i]) return rank;
    }
    return -1;
}

int64_t shard_max_local(const shard_plan *p, int64_t n_ctx) {
    const int64_t N = p->n_ranks;
    int64_t prompt = p->zigzag ? 2 * ((p->n_prompt + 2 * N - 1) / (2 * N)) : (p->n_prompt + N - 1) / N;
    int64_t n_gen = n_ctx > p->n_prompt ? n_ctx - p->n_prompt : 0;
    int64_t gen_blocks = (n_gen + SHARD_GEN_BLOCK - 1) / SHARD_GEN_BLOCK;
    return prompt + ((gen_blocks + N - 1) / N) * SHARD_GEN_BLOCK;
}

int64_t shard_max_runs(const shard_plan *p, int64_t n_total) {
    int64_t n_gen = n_total > p->n_prompt ? n_total - p->n_prompt : 0;
    return 2 * (int64_t)p->n_ranks + (n_gen + SHARD_GEN_BLOCK - 1) / SHARD_GEN_BLOCK + 1;
}

static int64_t push_run(shard_run *out, int64_t n, int64_t start, int64_t end, int owner) {
    if (end <= start) return n;
    if (n > 0 && out[n - 1].owner == owner && out[n - 1].end == start) {
        out[n - 1].end = end;
        return n;
    }
    out[n] = (shard_run){start, end, owner};
    return n + 1;
}

int64_t shard_runs(const shard_plan *p, int64_t n_total, shard_run *out) {
    int64_t n = 0;
    const int64_t n_prompt = p->n_prompt < n_total ? p->n_prompt : n_total;
    // Prompt chunks in position order: contiguous ranges are rank-ordered;
    // zigzag chunk i belongs to rank i for i < N, else to 2N-1-i.
    const int64_t N = p->n_ranks, n_chunks = p->zigzag ? 2 * N : N;
    for (int64_t i = 0; i < n_chunks; i++) {
        int rank = (int)(i < N ? i : 2 * N - 1 - i);
        shard_ranges r = shard_prompt_ranges(p, rank);
        int which = (p->zigzag && i >= N) ? 1 : 0;
        int64_t s = r.start[which], e = r.end[which] < n_prompt ? r.end[which] : n_prompt;
        n = push_run(out, n, s, e, rank);
    }
    for (int64_t s = p->n_prompt; s < n_total; s += SHARD_GEN_BLOCK) {
        int64_t e = s + SHARD_GEN_BLOCK < n_total ? s + SHARD_GEN_BLOCK : n_total;
        n = push_run(out, n, s, e, shard_owner(p, s));
    }
    return n;
}

int64_t shard_local_count(const shard_plan *p, int rank, int64_t n_total) {
    int64_t n = 0;
    shard_ranges r = shard_prompt_ranges(p, rank);
    for (int i = 0; i < r.n; i++) {
        int64_t e = r.end[i] < n_total ? r.end[i] : n_total;
        if (e > r.start[i]) n += e - r.start[i];
    }
    if (n_total > p->n_prompt) {
        const int64_t n_gen = n_total - p->n_prompt, N = p->n_ranks;
        const int64_t full_blocks = n_gen / SHARD_GEN_BLOCK, rest = n_gen % SHARD_GEN_BLOCK;
        n += (full_blocks / N + (rank < full_blocks % N)) * SHARD_GEN_BLOCK;
        if (rest && full_blocks % N == rank) n += rest;
    }
    return n;
}
