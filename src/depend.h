/*-------------------------------------------------------------------------
 *
 * depend.h
 *		Jobs that wait for others, and the handshake of their enqueue with the finish of their jobs (depend.c).
 *
 * IDENTIFICATION
 *		src/depend.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_DEPEND_H
#define JOBQ_DEPEND_H

#include "jobq.h"

/* depend.c: jobs that depend on other jobs */
#define JOBQ_MAX_DEPENDENCIES	100
/* ids of jobs waiting for a worker to settle their dependents again, at most */
#define JOBQ_DEPEND_RECHECK_QUEUE	256
extern Size JobqDependShmemSize(void);
extern void JobqDependShmemInit(void);
extern bool JobqDependentsMayExist(void);
extern void JobqNoteDependents(bool exist);
extern bool JobqCheckDependencies(ArrayType *deps, int *ndeps);
extern int	JobqSettleDependents(const int64 *ids, int n, JobqJob **cancel,
								 int64 **because);
extern int	JobqSettleWaitingJobs(JobqJob **cancel, int64 **because);
extern void JobqDependNoteFinished(const int64 *ids, int n);
extern void JobqDependAtEndOfXact(bool isCommit);
extern bool JobqDependRecheckTake(int64 *ids, int *n, bool *all);

#endif							/* JOBQ_DEPEND_H */
