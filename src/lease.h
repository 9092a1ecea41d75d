/*-------------------------------------------------------------------------
 *
 * lease.h
 *		External executors: what the rest of jobq calls (the shared memory,
 *		the expiry, the leases held), and what the files of the executors
 *		share: the lease state and its expiry (lease.c), the claim
 *		(lease_claim.c) and the calls that keep and end a lease
 *		(lease_calls.c).
 *
 * IDENTIFICATION
 *		src/lease.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_LEASE_H
#define JOBQ_LEASE_H

#include "jobq.h"

#include "access/tupdesc.h"
#include "executor/tuptable.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/*
 * lease.c: external executors (jobq.claim() and the lease it gives) and
 * the expiry of their leases
 */
#define JOBQ_MAX_CLAIM			1000	/* most jobs one jobq.claim() takes */
/* SQLSTATE of a call whose lease is no longer held */
#define ERRCODE_JOBQ_LEASE_LOST	MAKE_SQLSTATE('J','Q','0','0','1')
/* last_sqlstate of an attempt whose lease expired */
#define ERRCODE_JOBQ_LEASE_EXPIRED MAKE_SQLSTATE('J','Q','0','0','2')
extern Size JobqLeaseShmemSize(void);
extern void JobqLeaseShmemInit(void);
extern bool JobqLeaseExpiryTurn(void);
extern TimestampTz JobqLeaseNextCheck(void);
extern void JobqLeasesHeld(JobqLimitTally *t);
extern void JobqExpireLeases(void);
extern int	JobqExpireLeasesNow(void);

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
