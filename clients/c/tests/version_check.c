/* Built by tests/test_install.sh against an installed libinferwire with only
 * pkg-config's flags. Prints the library's version; exits 1 when the header it
 * was compiled with and the library it runs with disagree (the mismatch the
 * version macros exist to catch), 2 when the header's own macros disagree. */
#include <stdio.h>
#include <string.h>

#include <inferwire.h>

int main(void)
{
    char s[32];
    snprintf(s, sizeof s, "%d.%d.%d", INFERWIRE_VERSION_MAJOR, INFERWIRE_VERSION_MINOR,
             INFERWIRE_VERSION_PATCH);
    if (strcmp(s, INFERWIRE_VERSION_STRING) != 0) {
        fprintf(stderr, "header: numbers say %s, INFERWIRE_VERSION_STRING says %s\n", s,
                INFERWIRE_VERSION_STRING);
        return 2;
    }
    if (strcmp(inferwire_version(), INFERWIRE_VERSION_STRING) != 0) {
        fprintf(stderr, "mismatch: header %s, library %s\n", INFERWIRE_VERSION_STRING,
                inferwire_version());
        return 1;
    }
    printf("%s\n", inferwire_version());
    return 0;
}
