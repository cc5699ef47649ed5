/* xoshiro256** with splitmix64 seeding (Blackman & Vigna, "Scrambled linear pseudorandom number
 * generators", 2018). Written from the published recurrences; see cnf/core.h. */
#include <math.h>

#include "cnf/core.h"

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void cnf_rng_seed(cnf_rng *rng, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&seed);
    rng->spare = 0.0;
    rng->has_spare = 0;
}

uint64_t cnf_rng_u64(cnf_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double cnf_rng_uniform(cnf_rng *rng) { return (double)(cnf_rng_u64(rng) >> 11) * 0x1.0p-53; }

uint64_t cnf_rng_below(cnf_rng *rng, uint64_t n)
{
    /* Rejection sampling on the top of the range (Lemire's threshold). */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t r = cnf_rng_u64(rng);
        if (r >= threshold)
            return r % n;
    }
}

double cnf_rng_normal(cnf_rng *rng)
{
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare;
    }
    double u1 = 1.0 - cnf_rng_uniform(rng); /* (0, 1]: log is finite */
    double u2 = cnf_rng_uniform(rng);
    double r = sqrt(-2.0 * log(u1));
    double a = 2.0 * M_PI * u2;
    rng->spare = r * sin(a);
    rng->has_spare = 1;
    return r * cos(a);
}

double cnf_rng_rademacher(cnf_rng *rng) { return (cnf_rng_u64(rng) >> 63) ? 1.0 : -1.0; }
