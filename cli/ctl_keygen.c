/*  ctl_keygen: key pair generation for mandrill-ctl; see ctl_keygen.h. */
#include "ctl_keygen.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mdl_curve.h"
#include "mdl_opt.h"

int
ctl_keygen (const char *dir, int argc, char **argv)
{
    if (argc != 1) {
        fprintf (stderr, "mandrill-ctl: keygen takes one NAME (see --help)\n");
        return MDL_EXIT_USAGE;
    }
    if (!dir)
        dir = ".";
    //  A missing key directory is made private; an existing one is left as it is
    if (mkdir (dir, 0700) != 0 && errno != EEXIST) {
        fprintf (stderr, "mandrill-ctl: keygen: cannot make %s: %s\n", dir, strerror (errno));
        return MDL_EXIT_FAILURE;
    }
    char public_txt [MDL_CURVE_KEY_TXT];
    char error [512] = "";
    if (mdl_curve_keygen (dir, argv [0], public_txt, error, sizeof error) != 0) {
        fprintf (stderr, "mandrill-ctl: keygen: %s\n", error);
        //  A bad name is a usage error; anything else is the disk's or libzmq's
        return strncmp (error, "bad name", 8) == 0 ? MDL_EXIT_USAGE : MDL_EXIT_FAILURE;
    }
    printf ("public  %s/%s.key\nsecret  %s/%s.key_secret (mode 0600, keep it private)\n"
            "key     %s\n", dir, argv [0], dir, argv [0], public_txt);
    return MDL_EXIT_OK;
}
