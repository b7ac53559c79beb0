/*
 * The Gmail API implementation of struct mf_backend_ops (mf_backend.h),
 * listed in the registry in backend.c under the type "gmail".
 */
#ifndef GMAIL_BACKEND_H
#define GMAIL_BACKEND_H

#include "mf_backend.h"

extern const struct mf_backend_ops mf_gmail_backend_ops;

#endif
