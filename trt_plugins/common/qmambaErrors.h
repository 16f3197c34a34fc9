// Errors of the plugins: the cores throw PluginError with a message naming the op, the tensor or
// field and the problem; every noexcept TensorRT entry point catches it and reports it here.
#ifndef QMAMBA_ERRORS_H
#define QMAMBA_ERRORS_H

#include <stdexcept>
#include <string>

namespace qmamba
{

class PluginError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

// Logs "qmamba plugin <where>: <what>" as an error through TensorRT's logger (getLogger()), or
// stderr when no logger is there. Never throws.
void reportError(char const* where, char const* what) noexcept;

// Throws PluginError("<op>: <message>") unless `ok`.
inline void require(bool ok, char const* op, std::string const& message)
{
    if (!ok)
    {
        throw PluginError(std::string(op) + ": " + message);
    }
}

} // namespace qmamba

#endif // QMAMBA_ERRORS_H
