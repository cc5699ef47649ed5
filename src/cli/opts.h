/* Option tables for the subcommands: each option has a name, a type, where its value goes and a
 * help line, so parsing, --help and saving the options in a model file are written once. */
#ifndef CNF_CLI_OPTS_H
#define CNF_CLI_OPTS_H

#include <stdint.h>
#include <stdio.h>

typedef enum { OPT_STR, OPT_SIZE, OPT_DOUBLE, OPT_FLAG, OPT_U64 } opt_kind;

typedef struct cli_opt {
    const char *name; /* "--hidden" */
    opt_kind kind;
    void *ptr;        /* const char **, size_t *, double *, int *, uint64_t * */
    const char *arg;  /* "W1-W2-…" shown in help; NULL for flags */
    const char *help;
    int saved;        /* recorded in model files (training settings); 2: a flag recorded only
                       * when set, so that files of runs without it stay as they were */
} cli_opt;

/* Parse argv[1..] against opts. Returns 0 on success, 1 if --help was asked (help printed to
 * stdout), 2 after a usage message on stderr. */
int cli_opts_parse(const char *cmd, const cli_opt *opts, size_t n, int argc, char **argv,
                   void (*help)(FILE *));
/* Set one option from its text value; 0 or 2 after a message. */
int cli_opt_set(const char *cmd, const cli_opt *o, const char *value);
/* The option's current value as text (NULL for an unset string). */
const char *cli_opt_format(const cli_opt *o, char *buf, size_t len);
/* One help line per option. */
void cli_opts_help(FILE *out, const cli_opt *opts, size_t n);
/* Was this option given on the command line? (index into opts, set by cli_opts_parse) */
int cli_opt_given(const cli_opt *opts, const cli_opt *o);
/* n items of `each` bytes for option opt (a count the user gave): 0 when they fit in this
 * machine's memory, else 2 after a message naming the option and the size. Call it before any
 * allocation sized by the count: a product that wraps (n · each past SIZE_MAX) would otherwise
 * give a small buffer, and a size the kernel grants lazily would be killed when touched. */
int cli_check_count(const char *cmd, const char *opt, size_t n, size_t each);

#endif
