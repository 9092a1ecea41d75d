/*-------------------------------------------------------------------------
 *
 * lease.h
 *		What the files of the external executors share: the lease state
 *		and its expiry (lease.c), the claim (lease_claim.c) and the calls
 *		that keep and end a lease (lease_calls.c).
 *
 * IDENTIFICATION
 *		src/lease.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_LEASE_H
#define JOBQ_LEASE_H

#include "access/tupdesc.h"
#include "executor/tuptable.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* the longest lease, and the longest wait of a claim */
#define JOBQ_MAX_LEASE_MS		((int64) 7 * 24 * 3600 * 1000)

/*
 * The columns of jobq.job that the executors' calls read and write, by
 * name; their numbers follow the table's description (JobqLeaseJobTable).
 */
typedef enum JobColumn
{
	JC_ID,
	JC_QUEUE,
	JC_PRIORITY,
	JC_RUN_AT,
	JC_ATTEMPTS,
	JC_MAX_ATTEMPTS,
	JC_TIMEOUT,
	JC_OWNER,
	JC_CREATED_AT,
	JC_STARTED_AT,
	JC_TASK,
	JC_PAYLOAD,
	JC_EXTERNAL,
	JC_EXECUTOR,
	JC_LEASE_TOKEN,
	JC_LEASE_EXPIRES_AT,
	JC_NUM
} JobColumn;

extern JobqTable JobqLeaseJobTable;
extern AttrNumber JobqLeaseAttno[JC_NUM];

/* value and null flag of column c in slot (all attributes deformed) */
#define JOB_VALUE(slot, c) ((slot)->tts_values[JobqLeaseAttno[c] - 1])
#define JOB_ISNULL(slot, c) ((slot)->tts_isnull[JobqLeaseAttno[c] - 1])

extern Relation JobqLeaseOpenJobTable(void);
extern Relation JobqLeaseOpenJobIndex(JobqRel which);
extern void JobqLeaseTokenDigest(const pg_uuid_t *token, pg_uuid_t *digest);
extern void JobqLeaseNewToken(pg_uuid_t *token, pg_uuid_t *digest);
extern void JobqLeaseRequireExecutors(const char *what);
extern int64 JobqLeaseIntervalMs(Interval *iv, const char *what, bool zero_ok);
extern SPIPlanPtr JobqLeasePlan(SPIPlanPtr *plan, const char *sql, int nargs,
								Oid *argtypes);
extern void JobqLeasesCommitted(TimestampTz earliest_expiry);
extern void JobqLeaseSweepSoon(void);

#endif							/* JOBQ_LEASE_H */
