/* The `cnf` command: one function per subcommand, each `int cmd_X(int argc, char **argv)` with
 * argv[0] the subcommand name, returning the process exit status (0 ok, 1 failure, 2 usage). */
#ifndef CNF_CLI_H
#define CNF_CLI_H

#include <stdio.h>

int cmd_demo(int argc, char **argv);


/* Print "cnf <cmd>: <message>" to stderr together with the library's detail message for code. */
void cli_error(const char *cmd, int code, const char *what);

#endif
