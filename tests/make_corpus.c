/* Write the malformed-input corpus (bad_corpus.h) into a directory, one file per entry, and list
 * "name<TAB>phrase" lines on stdout: the CLI test runs cnf on each, and the fuzzers use the files
 * as seeds. Usage: make_corpus DIR */
#include "bad_corpus.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR\n");
        return 2;
    }
    for (size_t k = 0; k < N_BAD; k++) {
        char path[4096];
        if (bad_write(&bad_corpus[k], argv[1], path, sizeof path)) {
            fprintf(stderr, "make_corpus: cannot write %s\n", path);
            return 1;
        }
        printf("%s\t%s\n", bad_corpus[k].name, bad_corpus[k].phrase);
    }
    return 0;
}
