/* The `cnf` command: one function per subcommand, each `int cmd_X(int argc, char **argv)` with
 * argv[0] the subcommand name, returning the process exit status (0 ok, 1 failure, 2 usage). */
#ifndef CNF_CLI_H
#define CNF_CLI_H

#include <stdio.h>

int cmd_demo(int argc, char **argv);
int cmd_solvers(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_gradcheck(int argc, char **argv);
int cmd_bench(int argc, char **argv);


/* Print "cnf <cmd>: <message>" to stderr together with the library's detail message for code. */
void cli_error(const char *cmd, int code, const char *what);

/* ---- helpers shared by the subcommands (util.c) ---- */
/* Monotonic wall-clock seconds, for durations. */
double cli_now(void);
/* s as a JSON string literal (quotes and escapes). */
void cli_json_string(FILE *out, const char *s);
/* v as a JSON number that reads back exactly (15 to 17 digits); null if NaN or Inf. */
void cli_json_number(FILE *out, double v);
/* Comma-separated lists for option opt of command cmd: 0 and *out (free with free(), or
 * cli_free_list for names) with *n items, or -1 after a message on stderr (empty item, not a
 * finite number, not a positive integer). */
int cli_parse_doubles(const char *cmd, const char *opt, const char *arg, double **out, size_t *n);
int cli_parse_sizes(const char *cmd, const char *opt, const char *arg, size_t **out, size_t *n);
int cli_parse_names(const char *cmd, const char *opt, const char *arg, char ***out, size_t *n);
void cli_free_list(char **items);
/* An output file given as option opt: 0 if path can be written (its directory exists and is
 * writable, path is not a directory), else 2 after a message naming it. Creates and truncates
 * nothing: call it before any work so a bad path is found at once. NULL path: 0. */
int cli_check_output_path(const char *cmd, const char *opt, const char *path);
/* If argv[*i] is option name, as "--name VALUE" (advancing *i) or "--name=VALUE": 1 with *value
 * (NULL when the value is missing); otherwise 0. */
int cli_option_value(int argc, char **argv, int *i, const char *name, const char **value);

#endif
