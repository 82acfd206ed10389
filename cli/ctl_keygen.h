/*  ctl_keygen: `mandrill-ctl keygen NAME [--dir DIR]`.

    Writes DIR/NAME.key (public, 0644) and DIR/NAME.key_secret (both keys,
    0600) in CZMQ's zcert format with metadata name = NAME (mdl_curve_keygen),
    prints the two paths and the public key on stdout. Refuses to overwrite
    either file. A missing DIR is made (mode 0700; its parent must exist).
    No sockets, no broker: it works offline.
*/
#ifndef CTL_KEYGEN_H_INCLUDED
#define CTL_KEYGEN_H_INCLUDED

//  Run the command with its positional arguments (exactly one: NAME) and
//  DIR (NULL: the current directory). Returns the exit code, as every
//  Mandrill program's (mdl_opt.h): MDL_EXIT_OK written, MDL_EXIT_USAGE
//  (no or several names, a bad name), MDL_EXIT_FAILURE not written (a
//  file exists, I/O error, no CURVE in libzmq); the reason goes to stderr.
int ctl_keygen (const char *dir, int argc, char **argv);

#endif
