/*  mmp_codec_bench: how fast the MMP/1 codec decodes the broker's hot
    messages, with no sockets involved.

    Usage: mmp_codec_bench [SECONDS_PER_CASE]   (default 1)

    Each case runs for SECONDS_PER_CASE in rounds of 50 ms and reports its
    best round. Cases: a PUBLISH of 500 requests (uuid, instance, hostname, small
    attributes), an ACK of 100 ids, a DELIVER of 100 leases, and building
    an ACKED of 100 ids with the encoder. Prints nanoseconds per message and
    per item. Exit codes: 0 done, 1 bad argument, 2 a case failed to decode.
*/
#include "mmp.h"
#include "mdl_parse.h"
#include "mdl_uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

//  Decode body repeatedly for about seconds; prints the rate. Returns 0 or -1.
static int
s_decode_case (const char *label, mmp_direction_t direction, const char *command,
               const char *body, size_t items, double seconds)
{
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err;
    size_t size = strlen (body);
    //  Rounds of about 50 ms; the best round is reported, so other load on
    //  the machine inflates the figure less than an average would.
    double per_message = 1e18;
    double start = s_now ();
    while (s_now () - start < seconds) {
        long rounds = 0;
        double round_start = s_now ();
        double elapsed = 0;
        while (elapsed < 0.05) {
            for (int i = 0; i < 10; i++) {
                if (mmp_decode ("MMP1", 4, command, strlen (command), body, size,
                                direction, &msg, &err) != 0) {
                    fprintf (stderr, "%s: %s %s\n", label, err.code, err.reason);
                    return -1;
                }
                mmp_msg_reset (&msg);
            }
            rounds += 10;
            elapsed = s_now () - round_start;
        }
        if (elapsed * 1e9 / (double) rounds < per_message)
            per_message = elapsed * 1e9 / (double) rounds;
    }
    printf ("%-24s %8zu bytes  %10.0f ns/message  %7.1f ns/item  %9.0f items/s\n",
            label, size, per_message, per_message / (double) items,
            (double) items * 1e9 / per_message);
    return 0;
}

int
main (int argc, char *argv [])
{
    double seconds = 1;
    if (argc > 1 && mdl_parse_double (argv [1], 0.01, 3600, &seconds) != 0) {
        fprintf (stderr, "usage: %s [SECONDS_PER_CASE]\n", argv [0]);
        return 1;
    }
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    int rc = 0;

    //  PUBLISH of 500 requests, as mandrill-publish makes them
    mmp_buf_puts (&buf, "{\"req\":\"bench\",\"messages\":[");
    for (int i = 0; i < 500; i++) {
        char uuid [37];
        mdl_uuid4 (uuid);
        mmp_buf_printf (&buf, "%s{\"message_id\":\"%s\",\"instance_name\":\"cattle-%04x\","
                        "\"hostname\":\"cattle-%04x.example.net\",\"attributes\":{\"zone\":\"eu-1\",\"try\":%d}}",
                        i ? "," : "", uuid, i, i, i);
    }
    mmp_buf_puts (&buf, "]}");
    rc |= s_decode_case ("PUBLISH x500", MMP_TO_BROKER, "PUBLISH", mmp_buf_data (&buf), 500, seconds);

    //  The same without attributes
    mmp_buf_clear (&buf);
    mmp_buf_puts (&buf, "{\"messages\":[");
    for (int i = 0; i < 500; i++) {
        char uuid [37];
        mdl_uuid4 (uuid);
        mmp_buf_printf (&buf, "%s{\"message_id\":\"%s\",\"instance_name\":\"cattle-%04x\"}",
                        i ? "," : "", uuid, i);
    }
    mmp_buf_puts (&buf, "]}");
    rc |= s_decode_case ("PUBLISH x500 (bare)", MMP_TO_BROKER, "PUBLISH", mmp_buf_data (&buf), 500, seconds);

    //  ACK of 100 ids in the broker's epoch << 32 | sequence layout
    uint64_t ids [100];
    for (int i = 0; i < 100; i++)
        ids [i] = ((uint64_t) 7 << 32) | (uint64_t) (1000000 + i);
    mmp_encode_ack (&buf, ids, 100);
    rc |= s_decode_case ("ACK x100", MMP_TO_BROKER, "ACK", mmp_buf_data (&buf), 100, seconds);

    //  DELIVER of 100 leases, what a worker decodes
    mmp_buf_clear (&buf);
    mmp_buf_puts (&buf, "{\"deliveries\":[");
    for (int i = 0; i < 100; i++) {
        char uuid [37];
        mdl_uuid4 (uuid);
        mmp_buf_printf (&buf, "%s{\"delivery_id\":", i ? "," : "");
        mmp_buf_u64 (&buf, ids [i]);
        mmp_buf_printf (&buf, ",\"attempt\":1,\"deadline_ms\":10000,\"steps\":[],\"message\":"
                        "{\"message_id\":\"%s\",\"instance_name\":\"cattle-%04x\","
                        "\"hostname\":\"cattle-%04x.example.net\"}}", uuid, i, i);
    }
    mmp_buf_puts (&buf, "]}");
    rc |= s_decode_case ("DELIVER x100", MMP_FROM_BROKER, "DELIVER", mmp_buf_data (&buf), 100, seconds);

    //  Building ACKED {ok:[100 ids], stale:[], unknown:[]} with the encoder
    long rounds = 0;
    double start = s_now ();
    double elapsed = 0;
    size_t size = 0;
    while (elapsed < seconds) {
        for (int i = 0; i < 1000; i++) {
            mmp_encode_id_reply (&buf, ids, 100, NULL, 0, NULL, 0, -1);
            size = mmp_buf_size (&buf);
        }
        rounds += 1000;
        elapsed = s_now () - start;
    }
    double per_message = elapsed * 1e9 / (double) rounds;
    printf ("%-24s %8zu bytes  %10.0f ns/message  %7.1f ns/item  %9.0f items/s\n",
            "build ACKED x100", size, per_message, per_message / 100, 100 * 1e9 / per_message);
    mmp_buf_free (&buf);
    return rc ? 2 : 0;
}
