/*  test_brk_state_saver: the policy state's background writer. A posted
    text reaches the file (by the destroy at the latest), only the newest
    of several posts counts, a synchronous write wins over an older post,
    and a failed background write is reported and retried at the next
    post.
*/
#include <criterion/criterion.h>
#include "brk_state_file.h"
#include "brk_state_saver.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char s_dir [64];

static void
s_setup (void)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/test_brk_state_saver.XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
}

static void
s_teardown (void)
{
    char path [128];
    const char *names [] = { "state", "state.tmp", "sub/state", "sub/state.tmp" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        snprintf (path, sizeof path, "%s/%s", s_dir, names [i]);
        unlink (path);
    }
    snprintf (path, sizeof path, "%s/sub", s_dir);
    rmdir (path);
    rmdir (s_dir);
}

TestSuite (brk_state_saver, .init = s_setup, .fini = s_teardown, .timeout = 30);

static void
s_expect_file (const char *dir, const char *want)
{
    char *text = brk_state_file_read (dir, "state");
    cr_assert_not_null (text, "no state file in %s", dir);
    cr_expect_str_eq (text, want);
    free (text);
}

Test (brk_state_saver, a_post_reaches_the_file_by_the_destroy)
{
    brk_state_saver_t *saver = brk_state_saver_new (s_dir, "state", "test");
    cr_assert_not_null (saver);
    cr_assert_eq (brk_state_saver_post (saver, "one", 3), 0);
    brk_state_saver_destroy (&saver);
    cr_assert_null (saver);
    s_expect_file (s_dir, "one");
}

Test (brk_state_saver, only_the_newest_post_counts)
{
    brk_state_saver_t *saver = brk_state_saver_new (s_dir, "state", "test");
    cr_assert_not_null (saver);
    char text [16];
    for (int i = 0; i < 100; i++) {
        int len = snprintf (text, sizeof text, "v%d", i);
        cr_assert_eq (brk_state_saver_post (saver, text, (size_t) len), 0);
    }
    brk_state_saver_destroy (&saver);
    s_expect_file (s_dir, "v99");
}

Test (brk_state_saver, a_write_wins_over_an_older_post)
{
    brk_state_saver_t *saver = brk_state_saver_new (s_dir, "state", "test");
    cr_assert_not_null (saver);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq (brk_state_saver_post (saver, "posted", 6), 0);
        cr_assert_eq (brk_state_saver_write (saver, "written", 7), 0);
        s_expect_file (s_dir, "written");
    }
    brk_state_saver_destroy (&saver);
    s_expect_file (s_dir, "written");
}

Test (brk_state_saver, a_failed_write_is_reported_and_retried_at_the_next_post)
{
    char sub [96];
    snprintf (sub, sizeof sub, "%s/sub", s_dir);
    brk_state_saver_t *saver = brk_state_saver_new (sub, "state", "test");
    cr_assert_not_null (saver);
    cr_assert_eq (brk_state_saver_post (saver, "lost", 4), 0);
    for (int i = 0; i < 200 && !brk_state_saver_failed (saver); i++)
        poll (NULL, 0, 10);
    cr_assert (brk_state_saver_failed (saver), "the write into a missing directory did not fail");
    cr_assert_eq (mkdir (sub, 0700), 0);
    cr_assert_eq (brk_state_saver_post (saver, "kept", 4), 0);
    for (int i = 0; i < 200 && brk_state_saver_writes (saver) == 0; i++)
        poll (NULL, 0, 10);
    cr_expect_eq (brk_state_saver_writes (saver), 1);
    cr_expect_not (brk_state_saver_failed (saver));
    brk_state_saver_destroy (&saver);
    s_expect_file (sub, "kept");
}
