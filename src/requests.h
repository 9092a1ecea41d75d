/*-------------------------------------------------------------------------
 *
 * requests.h
 *		jobq.cancel() and jobq.wait() requests in shared memory (requests.c).
 *
 * IDENTIFICATION
 *		src/requests.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_REQUESTS_H
#define JOBQ_REQUESTS_H

#include "jobq.h"

/* requests.c: jobq.cancel() and jobq.wait() requests */
extern Size JobqRequestsShmemSize(void);
extern void JobqRequestsShmemInit(void);
extern int	JobqCancelRequestAdd(int64 id);
extern void JobqCancelRequestRemove(int idx);
extern bool JobqCancelRequestedSince(int64 id, TimestampTz *since);
extern bool JobqCancelRequested(int64 id);
extern void JobqCancelRequestDone(int64 id);
extern bool JobqCancelRequestWasDone(int idx, int64 id);
extern int	JobqWaitBegin(int64 id);
extern void JobqWaitEnd(int idx);
extern void JobqWakeWaitersOf(const int64 *ids, int n, bool overflowed);
extern void JobqWaitPrepareToSleep(void);
extern void JobqWaitSleep(long ms);

#endif							/* JOBQ_REQUESTS_H */
