// Shared pieces of the `recall` command line: error exit, number parsing,
// model + tokenizer loading, peak memory.
#ifndef RECALL_CLI_CLI_H
#define RECALL_CLI_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "comm/comm.h"
#include "core/status.h"
#include "model/model.h"

// Under several ranks, errors name the rank and end the whole job (abort).
void cli_set_comm(comm *c);
// Prints "recall: <message>" as one line on stderr and exits with status 1
// ("recall: [rank r @ host] <message>" and an abort of every rank under MPI).
_Noreturn void cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void cli_die_err(const rc_err *err);
// Dies naming the step ("decode step 7 (position 12)") when any of the
// n_vocab logits is NaN or infinite: a broken model must not become a token.
void cli_check_logits(const float *logits, int64_t n_vocab, const char *step_fmt, ...)
    __attribute__((format(printf, 3, 4)));

// The communicator of this process: MPI when started by mpirun/srun, else the
// null one; registered with cli_die. Dies when MPI is needed but missing.
comm *cli_comm_init(void);
// model_load, dying on error; under several ranks it also dies, naming the
// rank, when a rank's file differs from rank 0's (size or header hash).
void cli_load_model(comm *cm, model *m, const char *path);
int cli_parse_kv_type(const char *value);  // "f16" | "f32" | "q8_0" | "q4_0" -> enum kv_elem; dies otherwise

int64_t cli_parse_int(const char *flag, const char *value, int64_t min, int64_t max);
double cli_parse_double(const char *flag, const char *value, double min, double max);
// Comma-separated integers ("512,4096"); returns the count written to out.
int cli_parse_int_list(const char *flag, const char *value, int64_t *out, int max_n, int64_t min, int64_t max);
int cli_default_threads(void);
double cli_peak_rss_mib(void);
double cli_now(void);
// Input files are read whole, up to a bound (stated in --help): a config
// file up to 1 MiB, a prompt or text file up to 256 MiB.
#define CLI_MAX_CONFIG_BYTES ((size_t)1 << 20)
#define CLI_MAX_TEXT_BYTES ((size_t)256 << 20)
// A prompt or text file, NUL-terminated; `what` names it in errors ("prompt
// file"). Dies on error, including a file over CLI_MAX_TEXT_BYTES.
char *cli_read_file(const char *path, const char *what, size_t *n_bytes);
// One CSV field, quoted (RFC 4180) when it holds a comma, quote or line break.
void cli_csv_field(FILE *f, const char *s);
// "HEAD ARG..." for argv[1..argc) (after the config merge: the whole setting),
// an argument with a space or a shell metacharacter in single quotes, cut at
// cap - 1 bytes. The one command-line rebuild of bench and eval.
void cli_command_line(const char *head, int argc, char **argv, char *buf, size_t cap);

int cmd_generate(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_profile_heads(int argc, char **argv);
int cmd_plan(int argc, char **argv);

#endif
