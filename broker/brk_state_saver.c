/*  brk_state_saver: see brk_state_saver.h. */
#include "brk_state_saver.h"
#include "brk_state_file.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_log.h"

struct _brk_state_saver_t {
    char *dir, *name, *what;
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t wake;            //  Something posted, or stop
    pthread_cond_t idle;            //  A background write ended
    char *pending;                  //  Posted, not yet taken (owned)
    size_t pending_len;
    bool hold;                      //  pending failed once: wait for a post
    bool writing;                   //  The thread is writing a text
    bool stop;
    bool failed;                    //  The last background write failed
    unsigned long writes;           //  Background writes that succeeded
};

static void *
s_run (void *arg)
{
    brk_state_saver_t *self = (brk_state_saver_t *) arg;
    pthread_mutex_lock (&self->mutex);
    while (true) {
        //  A text that failed waits (hold) for the next post, or the stop
        while ((!self->pending || self->hold) && !self->stop)
            pthread_cond_wait (&self->wake, &self->mutex);
        if (!self->pending)
            break;                  //  Stopping, nothing left to write
        char *text = self->pending;
        size_t len = self->pending_len;
        self->pending = NULL;
        self->hold = false;
        self->writing = true;
        pthread_mutex_unlock (&self->mutex);
        int rc = brk_state_file_write (self->dir, self->name, text, len);
        int err = errno;
        pthread_mutex_lock (&self->mutex);
        self->writing = false;
        if (rc == 0) {
            if (self->failed)
                mdl_info ("%s: state saved again", self->what);
            self->failed = false;
            self->writes++;
            free (text);
        }
        else {
            if (!self->failed)
                mdl_error ("%s: cannot save the state: %s (retried at the next change)",
                           self->what, strerror (err));
            self->failed = true;
            if (!self->pending && !self->stop) {
                self->pending = text;       //  Kept for the next try
                self->pending_len = len;
                self->hold = true;
            }
            else
                free (text);                //  A newer one came, or stopping
        }
        pthread_cond_broadcast (&self->idle);
    }
    pthread_mutex_unlock (&self->mutex);
    return NULL;
}

//  Everything but the thread
static void
s_free (brk_state_saver_t *self)
{
    free (self->pending);
    pthread_cond_destroy (&self->idle);
    pthread_cond_destroy (&self->wake);
    pthread_mutex_destroy (&self->mutex);
    free (self->dir);
    free (self->name);
    free (self->what);
    free (self);
}

brk_state_saver_t *
brk_state_saver_new (const char *dir, const char *name, const char *what)
{
    brk_state_saver_t *self = (brk_state_saver_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->dir = strdup (dir);
    self->name = strdup (name);
    self->what = strdup (what);
    if (!self->dir || !self->name || !self->what) {
        free (self->dir);
        free (self->name);
        free (self->what);
        free (self);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init (&self->mutex, NULL);
    pthread_cond_init (&self->wake, NULL);
    pthread_cond_init (&self->idle, NULL);
    //  The thread takes no signal: the owner's loop handles them
    sigset_t all, old;
    sigfillset (&all);
    pthread_sigmask (SIG_SETMASK, &all, &old);
    int rc = pthread_create (&self->thread, NULL, s_run, self);
    pthread_sigmask (SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        s_free (self);
        errno = rc;
        return NULL;
    }
    return self;
}

void
brk_state_saver_destroy (brk_state_saver_t **self_p)
{
    brk_state_saver_t *self = *self_p;
    if (!self)
        return;
    pthread_mutex_lock (&self->mutex);
    self->stop = true;
    pthread_cond_broadcast (&self->wake);
    pthread_mutex_unlock (&self->mutex);
    pthread_join (self->thread, NULL);
    s_free (self);
    *self_p = NULL;
}

int
brk_state_saver_post (brk_state_saver_t *self, const char *text, size_t len)
{
    char *copy = (char *) malloc (len + 1);
    if (!copy) {
        errno = ENOMEM;
        return -1;
    }
    memcpy (copy, text, len);
    copy [len] = 0;
    pthread_mutex_lock (&self->mutex);
    free (self->pending);
    self->pending = copy;
    self->pending_len = len;
    self->hold = false;
    pthread_cond_broadcast (&self->wake);
    pthread_mutex_unlock (&self->mutex);
    return 0;
}

int
brk_state_saver_write (brk_state_saver_t *self, const char *text, size_t len)
{
    pthread_mutex_lock (&self->mutex);
    free (self->pending);           //  Older than this one
    self->pending = NULL;
    self->hold = false;
    while (self->writing)
        pthread_cond_wait (&self->idle, &self->mutex);
    //  Held across the write: the thread cannot start another meanwhile
    //  (nothing is pending, and a post needs this mutex)
    int rc = brk_state_file_write (self->dir, self->name, text, len);
    int err = errno;
    if (rc == 0)
        self->failed = false;
    pthread_mutex_unlock (&self->mutex);
    errno = err;
    return rc;
}

bool
brk_state_saver_failed (brk_state_saver_t *self)
{
    pthread_mutex_lock (&self->mutex);
    bool failed = self->failed;
    pthread_mutex_unlock (&self->mutex);
    return failed;
}

unsigned long
brk_state_saver_writes (brk_state_saver_t *self)
{
    pthread_mutex_lock (&self->mutex);
    unsigned long writes = self->writes;
    pthread_mutex_unlock (&self->mutex);
    return writes;
}
